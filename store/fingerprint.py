"""What a persona's logs looked like when they were last trained on, to tell a real change from a restart.

The watcher and the server's start-up compare the logs folder's listing (paths, sizes, modification
times) with the one recorded after the persona's last finished job: equal means nothing to do, so a
restart does not queue every persona again. The worker still compares the examples themselves before
it trains, so a touched but unchanged file costs one quick check, not a training run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .adapters import adapters_root
from .files import atomic_write

SEEN_FILE = "logs-seen.json"


def logs_fingerprint(logs_dir: Path) -> str:
    """A hash of every file's relative path, size and modification time under ``logs_dir``."""
    entries = []
    if Path(logs_dir).is_dir():
        for path in sorted(Path(logs_dir).rglob("*")):
            try:
                if path.is_file():
                    stat = path.stat()
                    entries.append([str(path.relative_to(logs_dir)), stat.st_size, stat.st_mtime_ns])
            except OSError:
                continue  # removed while listing
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def _seen_path(persona_path: Path) -> Path:
    return adapters_root(persona_path) / ".work" / SEEN_FILE


def read_seen(persona_path: Path) -> str | None:
    try:
        return json.loads(_seen_path(persona_path).read_text(encoding="utf-8"))["fingerprint"]
    except (OSError, ValueError, KeyError):
        return None


def write_seen(persona_path: Path, fingerprint: str) -> None:
    atomic_write(_seen_path(persona_path), json.dumps({"fingerprint": fingerprint}))


def logs_changed(persona_path: Path, logs_dir: Path) -> bool:
    """True when the logs differ from what the last finished job saw (or no job has seen them)."""
    return read_seen(persona_path) != logs_fingerprint(logs_dir)
