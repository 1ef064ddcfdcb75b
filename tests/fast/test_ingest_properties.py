"""Property tests: the text parsers survive any input, and well-formed logs read back exactly."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.ingest import ParsedFile, ParseError, load_file, split_sessions
from training.ingest.formats import transcript, whatsapp

FAST = settings(max_examples=80, deadline=None)

# Pieces that steer random text into the parsers' interesting branches.
PIECES = [
    "12/03/23, 14:02 - ",
    "[3/14/24, 9:07:12\u202fPM] ",
    "1/13/23, 9:07 PM - ",
    "2024-01-05, 08:00 - ",
    "31/12/99, 23:59 - ",
    "[99/99/99, 99:99:99] ",
    "00/00/00, 00:00 - ",
    "12:61\u202fam - ",
    "\u200e",
    "\u202f",
    "\u00a0",
    "\ufeff",
    "Kit: ",
    "Mr. Pell: ",
    "Note: ",
    "PS:",
    ": ",
    ":",
    "\n",
    "\n\n",
    " ",
    "<Media omitted>",
    "image omitted",
    "<attached: x.jpg>",
    "This message was deleted",
    "\t",
    "[",
    "]",
    "-",
    "hello",
    "Messages and calls are end-to-end encrypted",
    "null",
    "\r\n",
    "\r",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("props")


def _write(folder: Path, text: str) -> Path:
    path = folder / "chat.txt"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


def _check_parse(module, path: Path) -> None:
    try:
        parsed = module.parse(path)
    except ParseError as exc:
        assert str(exc)
        return
    assert isinstance(parsed, ParsedFile)
    assert parsed.conversations or parsed.problems
    for message in parsed.messages:
        assert isinstance(message.speaker, str) and isinstance(message.text, str)


def _check_load(path: Path) -> None:
    try:
        parsed = load_file(path)
    except ParseError as exc:
        assert str(exc)
        return
    assert parsed.messages


text_strategy = st.text(st.characters(exclude_categories=("Cs",)), max_size=400)
pieces_strategy = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=8)), max_size=40).map("".join)


@FAST
@given(text=st.one_of(text_strategy, pieces_strategy))
def test_text_parsers_never_crash(folder, text):
    path = _write(folder, text)
    _check_parse(transcript, path)
    _check_parse(whatsapp, path)
    _check_load(path)
    transcript.detect(path, text)
    whatsapp.detect(path, text)


NAMES = ["Ann", "Bob", "Mr Pell", "Juno", "xXgamerXx"]
WORDS = ["hello", "lamp", "sailor", "tea", "storm", "ok", "the", "tower", "fine", "you"]
line_text = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join)
message_text = st.lists(line_text, min_size=1, max_size=3).map("\n".join)


@FAST
@given(st.lists(st.tuples(st.sampled_from(NAMES), message_text), min_size=1, max_size=12))
def test_transcripts_read_back_exactly(folder, messages):
    lines = []
    for name, text in messages:
        first, *rest = text.split("\n")
        lines.append(f"{name}: {first}")
        lines.extend(rest)
    parsed = transcript.parse(_write(folder, "\n".join(lines) + "\n"))
    assert [(m.speaker, m.text) for m in parsed.messages] == messages


@FAST
@given(
    st.lists(st.tuples(st.sampled_from(NAMES), message_text, st.integers(0, 50_000)), min_size=1, max_size=12),
    st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2090, 1, 1)),
    st.sampled_from(["android", "ios"]),
)
def test_whatsapp_reads_back_exactly(folder, messages, start, form):
    # Day first: a file whose dates never pass 12 cannot tell DD/MM from MM/DD, and day first is the default.
    start = start.replace(microsecond=0, second=0 if form == "android" else start.second)
    lines, expected, when = [], [], start
    for name, text, minutes in messages:
        when += timedelta(minutes=minutes)
        if form == "android":
            stamp = f"{when:%d/%m/%Y, %H:%M} - "
        else:
            hour = when.hour % 12 or 12
            stamp = f"[{when.day}/{when.month}/{when:%y}, {hour}:{when:%M:%S}\u202f{'AM' if when.hour < 12 else 'PM'}] "
        lines.append(stamp + f"{name}: {text}")
        expected.append((name, text, when))
    parsed = whatsapp.parse(_write(folder, "\n".join(lines) + "\n"))
    assert [(m.speaker, m.text, m.time) for m in parsed.messages] == expected


@FAST
@given(st.sets(st.text(max_size=12), max_size=60), st.floats(0.0, 0.9))
def test_heldout_split_is_a_stable_proper_subset(sessions, fraction):
    held = split_sessions(sessions, fraction)
    assert held <= sessions
    assert held == split_sessions(sorted(sessions, reverse=True), fraction)
    if sessions:
        assert len(held) < len(sessions)
    if len(sessions) >= 3 and fraction > 0:
        assert held
