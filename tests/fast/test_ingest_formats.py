"""Parsing chat exports: every supported format, detected by content, including the ugly cases."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from training.ingest import LoadResult, ParsedFile, load_file, load_logs
from training.ingest.formats import whatsapp

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "logs"

EXPECTED_FORMATS = {
    "alpaca/visitors.json": "alpaca",
    "discord/general.json": "discord",
    "openai/keeper.jsonl": "openai",
    "sharegpt/more.jsonl": "sharegpt",
    "sharegpt/steps.json": "sharegpt",
    "telegram/result.json": "telegram",
    "transcript/harbour.txt": "transcript",
    "whatsapp/WhatsApp Chat with Kit.txt": "whatsapp",
    "whatsapp/ios.txt": "whatsapp",
    "whatsapp/ymd.txt": "whatsapp",
}


@pytest.fixture(scope="module")
def loaded() -> LoadResult:
    return load_logs(FIXTURES)


def parsed(loaded: LoadResult, name: str) -> ParsedFile:
    return next(p for p in loaded.files if loaded.relative(p.path) == name)


def texts(file: ParsedFile, kind: str = "text") -> list[tuple[str, str]]:
    return [(m.speaker, m.text) for m in file.messages if m.kind == kind]


def test_every_fixture_is_detected_as_its_format(loaded):
    assert {loaded.relative(p.path): p.format for p in loaded.files} == EXPECTED_FORMATS
    assert all(not p.problems for p in loaded.files)


def test_broken_files_become_named_problems_and_the_rest_loads(loaded):
    problems = {loaded.relative(path): reason for path, reason in loaded.problems}
    assert set(problems) == {"broken/empty.txt", "broken/readme.md", "broken/truncated.json"}
    assert problems["broken/empty.txt"] == "empty file"
    assert problems["broken/truncated.json"].startswith("bad JSON at line 4")
    assert "ShareGPT" in problems["broken/truncated.json"]
    assert problems["broken/readme.md"].startswith("not a known chat format")
    assert "WhatsApp" in problems["broken/readme.md"]
    assert len(loaded.files) == len(EXPECTED_FORMATS)


def test_openai_jsonl_roles_weights_and_content_parts(loaded):
    file = parsed(loaded, "openai/keeper.jsonl")
    assert [c.source for c in file.conversations] == [
        "openai/keeper.jsonl#1",
        "openai/keeper.jsonl#2",
        "openai/keeper.jsonl#3",
    ]
    second = file.conversations[1].messages
    assert [(m.role, m.weight) for m in second] == [
        ("other", 1.0),
        ("character", 0.0),
        ("other", 1.0),
        ("character", 1.0),
    ]
    assert second[0].text == "Any storms coming?"  # content given as a list of parts
    assert file.conversations[0].messages[0].role == "system"


def test_openai_jsonl_bad_line_is_a_problem_and_good_lines_are_kept(tmp_path):
    lines = [
        json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}),
        '{"messages": [ oops',
        json.dumps({"messages": [{"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}),
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    result = load_file(path)
    assert len(result.conversations) == 2
    assert result.problems and result.problems[0].startswith("bad JSON at line 2")


def test_openai_records_as_a_json_array(tmp_path):
    path = tmp_path / "chats.json"
    record = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0}]}
    path.write_text(json.dumps([record, record], indent=2), encoding="utf-8")
    result = load_file(path)
    assert result.format == "openai"
    assert [(m.role, m.text, m.weight) for m in result.conversations[1].messages] == [
        ("other", "a", 1.0),
        ("character", "b", 0.0),
    ]


def test_sharegpt_both_role_vocabularies_and_jsonl(loaded):
    steps = parsed(loaded, "sharegpt/steps.json")
    assert [m.role for m in steps.conversations[0].messages] == ["system", "other", "character", "other", "character"]
    assert [m.role for m in steps.conversations[1].messages] == ["other", "character"]
    more = parsed(loaded, "sharegpt/more.jsonl")
    assert texts(more)[1] == ("gpt", "The Mary Anne. Painted red, sails like a duck.")


def test_alpaca_history_then_instruction_with_input(loaded):
    file = parsed(loaded, "alpaca/visitors.json")
    with_input, with_history = file.conversations[1].messages, file.conversations[2].messages
    assert with_input[0].role == "system"
    assert with_input[1].text == "Answer the visitor.\n\nCan I climb up?"
    assert [(m.role, m.text) for m in with_history] == [
        ("other", "Hello Juno!"),
        ("character", "Ahoy, sailor!"),
        ("other", "Is it windy?"),
        ("character", "Always, up here."),
        ("other", "And after that?"),
        ("character", "Then you'll see three islands and my laundry."),
    ]


def test_transcript_continuations_note_lines_and_sessions(loaded):
    file = parsed(loaded, "transcript/harbour.txt")
    assert len(file.conversations) == 2  # the blank line ends a session
    first = file.conversations[0].messages
    assert first[1].speaker == "Juno"
    assert first[1].text == "Like an angel, sailor.\nOnly flickered once around three.\nNote: I oiled the gears anyway."
    assert [m.speaker for m in file.conversations[1].messages] == ["Mira", "Juno", "Pell", "Juno", "Mira", "Juno"]


def test_transcript_known_label_words_and_punctuated_prefixes(tmp_path):
    path = tmp_path / "chat.txt"
    path.write_text(
        "Ann: Hello there.\n"
        "Bob: Hi. Quick list:\n"
        "So the plan is: eggs, flour.\n"
        "Well, anyway: done.\n"
        "PS: bring milk\n"
        "Ann: Will do.\n",
        encoding="utf-8",
    )
    messages = load_file(path).messages
    assert [m.speaker for m in messages] == ["Ann", "Bob", "Ann"]
    assert messages[1].text.splitlines()[1:] == [
        "So the plan is: eggs, flour.",
        "Well, anyway: done.",
        "PS: bring milk",
    ]


def test_whatsapp_android_lines_media_system_deleted_and_multiline(loaded):
    file = parsed(loaded, "whatsapp/WhatsApp Chat with Kit.txt")
    messages = file.messages
    assert [m.kind for m in messages].count("system") == 2  # the encryption notice, "Kit added Mira"
    assert texts(file, "media") == [("Kit", "<Media omitted>")]
    assert texts(file, "deleted") == [("Juno", "This message was deleted")]
    assert ("Juno", "Already on it, sailor.\nShutters closed, lamp trimmed,\nkettle full.") in texts(file)
    assert messages[-3].time == datetime(2023, 3, 13, 9, 15)  # 13/03 makes the file day-first


def test_whatsapp_ios_12_hour_clock_narrow_space_and_marks(loaded):
    file = parsed(loaded, "whatsapp/ios.txt")
    first = file.messages[1]
    assert (first.speaker, first.text, first.time) == ("Kit", "How's the new lens?", datetime(2024, 3, 14, 21, 7, 12))
    assert file.messages[0].kind == "system"  # encryption notice, with a name and U+200E
    assert [m.text for m in file.messages if m.kind == "media"] == [
        "image omitted",
        "<attached: 00000012-PHOTO-2024-03-14-21-09-30.jpg>",
    ]
    assert ("Kit", "Send me one at night\nwith the beam on?") in texts(file)
    assert all("\u200e" not in m.text and "\u200e" not in m.speaker for m in file.messages)


@pytest.mark.parametrize(
    ("line", "when"),
    [
        ("1/13/23, 9:07 PM - Kit: hi", datetime(2023, 1, 13, 21, 7)),
        ("1/13/23, 9:07\u202fPM - Kit: hi", datetime(2023, 1, 13, 21, 7)),
        ("13.01.23, 21:07 - Kit: hi", datetime(2023, 1, 13, 21, 7)),
        ("[13/01/2023, 21:07:05] Kit: hi", datetime(2023, 1, 13, 21, 7, 5)),
        ("\u200e[1/13/23, 12:05:00\u202fAM] Kit: hi", datetime(2023, 1, 13, 0, 5)),
        ("2023-01-13, 12:30 p.m. - Kit: hi", datetime(2023, 1, 13, 12, 30)),
    ],
)
def test_whatsapp_line_forms(tmp_path, line, when):
    path = tmp_path / "chat.txt"
    path.write_text(line + "\n", encoding="utf-8")
    (message,) = load_file(path).messages
    assert (message.speaker, message.text, message.time) == ("Kit", "hi", when)


def test_whatsapp_ambiguous_dates_follow_the_file_order(tmp_path):
    # 04/05 then 05/04: day-first would run backwards in time, so the file is month-first.
    path = tmp_path / "chat.txt"
    path.write_text("04/05/23, 10:00 - A: one\n05/04/23, 10:00 - B: two\n", encoding="utf-8")
    assert [m.time.month for m in load_file(path).messages] == [4, 5]
    assert whatsapp.infer_order(["01/02/23", "03/02/23"]) == "dmy"  # no evidence: day first


def test_telegram_entities_service_and_photo(loaded):
    file = parsed(loaded, "telegram/result.json")
    assert [m.kind for m in file.messages] == ["system", "text", "text", "media", "text"]
    juno = file.messages[2]
    assert juno.text == "I did, sailor! Read https://example.org/eclipse for the photos."
    assert juno.time == datetime(2024, 2, 1, 10, 2)


def test_discord_nickname_name_types_and_attachments(loaded):
    file = parsed(loaded, "discord/general.json")
    kinds = [(m.kind, m.speaker) for m in file.messages]
    assert kinds == [
        ("system", "kit.k"),
        ("text", "kit.k"),
        ("media", "Juno"),
        ("text", "Juno"),
        ("system", "kit.k"),
        ("text", "kit.k"),
    ]
    reply = file.messages[3]
    assert reply.aliases == ("junebug",)
    assert reply.time == datetime(2024, 3, 30, 18, 3, tzinfo=UTC)


def test_detection_is_by_content_not_extension(tmp_path):
    shutil.copy(FIXTURES / "whatsapp" / "ios.txt", tmp_path / "export.log")
    shutil.copy(FIXTURES / "openai" / "keeper.jsonl", tmp_path / "data.txt")
    shutil.copy(FIXTURES / "telegram" / "result.json", tmp_path / "telegram")
    shutil.copy(FIXTURES / "transcript" / "harbour.txt", tmp_path / "notes.json")
    result = load_logs(tmp_path)
    assert not result.problems
    assert {p.path.name: p.format for p in result.files} == {
        "export.log": "whatsapp",
        "data.txt": "openai",
        "telegram": "telegram",
        "notes.json": "transcript",
    }


def test_subfolders_attachments_hidden_binary_and_links(tmp_path):
    logs = tmp_path / "logs"
    (logs / "2023" / "march").mkdir(parents=True)
    shutil.copy(FIXTURES / "whatsapp" / "ymd.txt", logs / "2023" / "march" / "chat.txt")
    (logs / "2023" / "IMG-20230312-WA0001.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (logs / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (logs / "blob.dat").write_bytes(b"\x00\x01\x02binary")
    (logs / "latin1.txt").write_bytes("Ann: caf\xe9\nBob: oui\n".encode("latin-1"))
    outside = tmp_path / "secret.txt"
    outside.write_text("Ann: hi\nBob: hey\n", encoding="utf-8")
    os.symlink(outside, logs / "link.txt")
    result = load_logs(logs)
    assert [result.relative(p.path) for p in result.files] == ["2023/march/chat.txt"]
    assert result.files[0].conversations[0].source == "2023/march/chat.txt#0"
    problems = dict((result.relative(p), r) for p, r in result.problems)
    assert problems == {"blob.dat": "binary file, not a chat log", "latin1.txt": problems["latin1.txt"]}
    assert problems["latin1.txt"].startswith("not UTF-8 text")
    assert {result.relative(p) for p, _ in result.skipped} == {"2023/IMG-20230312-WA0001.jpg", "link.txt"}


def test_missing_or_empty_logs_folder_is_a_problem(tmp_path):
    assert load_logs(tmp_path / "nope").problems[0][1] == "no logs folder"
    (tmp_path / "logs").mkdir()
    assert load_logs(tmp_path / "logs").problems[0][1] == "no log files"


def test_json_of_no_known_shape_says_so(tmp_path):
    (tmp_path / "config.json").write_text('{"theme": "dark"}', encoding="utf-8")
    (tmp_path / "list.json").write_text("[1, 2,", encoding="utf-8")
    problems = {p.name: r for p, r in load_logs(tmp_path).problems}
    assert problems["config.json"].startswith("JSON, but not a known chat format")
    assert problems["list.json"].startswith("bad JSON at line 1")


def test_loading_never_writes_under_logs(tmp_path):
    logs = tmp_path / "logs"
    shutil.copytree(FIXTURES, logs)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in logs.rglob("*") if p.is_file()}
    for path in [logs, *logs.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        result = load_logs(logs)
    finally:
        for path in [logs, *logs.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert len(result.files) == len(EXPECTED_FORMATS)
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in logs.rglob("*") if p.is_file()}
    assert after == before
