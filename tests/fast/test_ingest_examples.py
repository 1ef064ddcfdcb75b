"""From parsed logs to training rows: the character, merging, sessions, windows, the split, errors."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from store.card import PersonaCard, load_card
from training.ingest import (
    ExampleSettings,
    NoCharacterSpeaker,
    TooFewExamples,
    build_examples,
    format_report,
    load_logs,
    split_sessions,
)

REPO = Path(__file__).resolve().parent.parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "logs"
LOOSE = ExampleSettings(min_examples=1)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def transcript_sessions(sessions: int, turns: int = 2, character: str = "Juno", other: str = "Kit") -> str:
    blocks = []
    for s in range(sessions):
        lines = []
        for t in range(turns):
            lines.append(f"{other}: question {t} of session {s}?")
            lines.append(f"{character}: answer {t} of session {s}, sailor.")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def build(folder: Path, name: str = "juno", card: PersonaCard | None = None, settings: ExampleSettings = LOOSE):
    return build_examples(load_logs(folder), name, card or PersonaCard(), settings)


def test_fixture_rows_have_the_exact_training_shape():
    result = load_logs(FIXTURES)
    examples = build_examples(result, "juno", PersonaCard(description="Keeps the lighthouse."), LOOSE)
    rows = examples.train.to_list() + examples.heldout.to_list()
    assert len(rows) == examples.examples > 20
    for row in rows:
        assert set(row) == {"messages", "session"}
        messages = row["messages"]
        assert messages[0] == {"role": "system", "content": "You are Juno. Keeps the lighthouse.", "weight": 0.0}
        assert messages[-1]["role"] == "assistant" and messages[-1]["weight"] == 1.0
        assert all(m["weight"] == 0.0 for m in messages[:-1])
        assert all(set(m) == {"role", "content", "weight"} and m["content"] for m in messages)
        assert {m["role"] for m in messages[1:]} <= {"user", "assistant"}
        assert messages[1]["role"] == "user"  # every fixture session has a user turn first
    contents = {m["content"] for row in rows for m in row["messages"]}
    assert not contents & {"<Media omitted>", "image omitted", "This message was deleted", "<attachment>", "<photo>"}
    assert not any("end-to-end encrypted" in c or c.startswith("You are Juno, a cheerful") for c in contents)
    assert examples.dropped["media"] == 5 and examples.dropped["deleted"] == 1 and examples.dropped["system"] == 9


def test_weight_zero_turn_is_context_but_never_a_target():
    examples = build(FIXTURES)
    rows = examples.train.to_list() + examples.heldout.to_list()
    targets = [row["messages"][-1]["content"] for row in rows]
    assert "Ugh, sorry, I cannot help with weather." not in targets
    (row,) = [r for r in rows if r["messages"][-1]["content"].startswith("Fine, fine!")]
    context = row["messages"][2]
    assert context == {"role": "assistant", "content": "Ugh, sorry, I cannot help with weather.", "weight": 0.0}
    assert examples.untrained_turns == 1


def test_consecutive_messages_of_one_side_merge(tmp_path):
    write(tmp_path, "chat.txt", "Kit: hi\nKit: you there?\nJuno: Yes!\nJuno: Sorry, was up the tower.\nKit: ok\n")
    (row,) = build(tmp_path).train.to_list()
    assert row["messages"][1:] == [
        {"role": "user", "content": "hi\nyou there?", "weight": 0.0},
        {"role": "assistant", "content": "Yes!\nSorry, was up the tower.", "weight": 1.0},
    ]


def test_group_sessions_prefix_other_speakers_names(tmp_path):
    write(
        tmp_path,
        "group.txt",
        "Kit: hi\nMira: hello\nMira: anyone?\nJuno: Both of you, hello!\n\nKit: solo\nJuno: Hi Kit.\n",
    )
    no_split = ExampleSettings(min_examples=1, heldout_fraction=0)
    rows = {r["session"]: r for r in build(tmp_path, settings=no_split).train.to_list()}
    assert rows["group.txt#0"]["messages"][1]["content"] == "Kit: hi\nMira: hello\nanyone?"
    assert rows["group.txt#1"]["messages"][1]["content"] == "solo"
    mixed = [{"from": "human", "value": "a"}, {"from": "user", "value": "b"}, {"from": "gpt", "value": "c"}]
    write(tmp_path, "roles.json", json.dumps([{"conversations": mixed}]))
    examples = build(tmp_path)
    (row,) = [r for r in examples.train.to_list() + examples.heldout.to_list() if r["session"] == "roles.json#1"]
    assert row["messages"][1]["content"] == "a\nb"  # role-based logs never get name prefixes


def test_sessions_split_on_long_gaps(tmp_path):
    write(
        tmp_path,
        "chat.txt",
        "01/05/23, 09:00 - Kit: morning\n01/05/23, 09:01 - Juno: Morning!\n"
        "01/05/23, 16:30 - Kit: evening\n01/05/23, 16:31 - Juno: Evening!\n",
    )
    split = build(tmp_path, settings=ExampleSettings(min_examples=1, heldout_fraction=0))
    assert {r["session"] for r in split.train.to_list()} == {"chat.txt#0/1", "chat.txt#0/2"}
    assert all(len(r["messages"]) == 3 for r in split.train.to_list())
    long_gap = ExampleSettings(min_examples=1, heldout_fraction=0, session_gap=timedelta(hours=12))
    joined = build(tmp_path, settings=long_gap)
    assert {r["session"] for r in joined.train.to_list()} == {"chat.txt#0"}
    assert len(joined.train.to_list()[-1]["messages"]) == 5


@pytest.mark.parametrize("window", [1, 2, 3, 6])
def test_windows_are_bounded_and_start_with_a_user_turn(tmp_path, window):
    write(tmp_path, "long.txt", transcript_sessions(1, turns=12))
    rows = build(tmp_path, settings=ExampleSettings(window=window, min_examples=1, heldout_fraction=0)).train.to_list()
    assert len(rows) == 12
    for row in rows:
        prior = row["messages"][1:-1]
        assert 1 <= len(prior) <= window
        assert prior[0]["role"] == "user"
    assert rows[-1]["messages"][-2]["content"] == "question 11 of session 0?"


def test_a_session_opened_by_the_character_keeps_its_first_turn(tmp_path):
    write(tmp_path, "chat.txt", "Juno: Ahoy, anyone on the pier?\nKit: me\nJuno: Grand.\n")
    rows = build(tmp_path).train.to_list()
    assert [[m["role"] for m in r["messages"]] for r in rows] == [
        ["system", "assistant"],
        ["system", "assistant", "user", "assistant"],
    ]


def test_whole_sessions_train_every_reply_once_and_hold_out_per_reply(tmp_path):
    write(tmp_path, "a.txt", transcript_sessions(12, turns=5))
    examples = build(tmp_path)
    whole = examples.train_sessions.to_list()
    assert sorted(r["session"] for r in whole) == sorted(set(examples.train["session"]))
    targets = sorted((r["session"], r["messages"][-1]["content"]) for r in examples.train.to_list())
    trained = sorted((r["session"], m["content"]) for r in whole for m in r["messages"] if m["weight"] > 0)
    assert trained == targets  # the same replies, each once
    for row in whole:
        assert row["messages"][0]["role"] == "system"
        assert [m["role"] for m in row["messages"][1:]] == ["user", "assistant"] * 5
        assert all(m["weight"] == (1.0 if m["role"] == "assistant" else 0.0) for m in row["messages"][1:])
    # the held-out split stays one example per reply: that is what evaluation scores
    assert all(sum(m["weight"] > 0 for m in r["messages"]) == 1 for r in examples.heldout.to_list())


def test_whole_sessions_keep_an_untrained_reply_as_context():
    examples = build(FIXTURES, settings=ExampleSettings(min_examples=1, heldout_fraction=0))
    (row,) = [r for r in examples.train_sessions.to_list() if any(
        m["content"] == "Ugh, sorry, I cannot help with weather." for m in r["messages"])]  # fmt: skip
    context = next(m for m in row["messages"] if m["content"].startswith("Ugh, sorry"))
    assert context["weight"] == 0.0 and row["messages"][-1]["weight"] > 0


def test_exact_duplicates_drop(tmp_path):
    shutil.copy(FIXTURES / "whatsapp" / "WhatsApp Chat with Kit.txt", tmp_path / "one.txt")
    once = build(tmp_path)
    shutil.copy(FIXTURES / "whatsapp" / "WhatsApp Chat with Kit.txt", tmp_path / "two.txt")
    twice = build(tmp_path)
    assert twice.examples == once.examples
    assert twice.dropped["duplicate"] == 7  # every text message of the second copy


def test_duplicate_transcript_lines_and_records_drop(tmp_path):
    write(tmp_path, "chat.txt", "Kit: hi\nKit: hi\nJuno: Hello!\n")
    record = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    write(tmp_path, "data.jsonl", f"{json.dumps(record)}\n{json.dumps(record)}\n")
    examples = build(tmp_path)
    assert examples.examples == 2
    assert examples.dropped["duplicate"] == 3


def test_heldout_split_is_by_session_and_deterministic(tmp_path):
    write(tmp_path, "a.txt", transcript_sessions(12))
    write(tmp_path, "b/b.txt", transcript_sessions(8, other="Mira"))
    first = build(tmp_path)
    train_sessions = set(first.train["session"])
    heldout_sessions = set(first.heldout["session"])
    assert heldout_sessions == set(first.heldout_sessions)
    assert not train_sessions & heldout_sessions
    assert len(heldout_sessions) == 2  # 10% of 20
    again = build(tmp_path)
    assert again.data_hash == first.data_hash and again.heldout_sessions == first.heldout_sessions
    shuffled = load_logs(tmp_path)
    shuffled.files.reverse()
    reordered = build_examples(shuffled, "juno", PersonaCard(), LOOSE)
    assert reordered.data_hash == first.data_hash
    assert reordered.train.to_list() == first.train.to_list()


def test_small_sets_keep_at_least_one_heldout_session(tmp_path):
    write(tmp_path, "a.txt", transcript_sessions(3))
    assert len(build(tmp_path).heldout_sessions) == 1
    assert split_sessions(["x", "y"], 0.1) == set()
    assert split_sessions([f"s{i}" for i in range(40)], 0.0) == set()


def test_no_character_speaker_lists_the_speakers(tmp_path):
    write(tmp_path, "chat.txt", "Kit: one\nJuno: two\nKit: three\n")
    with pytest.raises(NoCharacterSpeaker) as caught:
        build(tmp_path, name="wren")
    message = str(caught.value)
    assert "Kit (2)" in message and "Juno (1)" in message
    assert "speakers:" in message and "persona.yaml" in message
    assert caught.value.speakers == {"Kit": 2, "Juno": 1}
    assert isinstance(caught.value, ValueError)
    with pytest.raises(NoCharacterSpeaker, match="Captain"):
        build(tmp_path, name="juno", card=PersonaCard(speakers=["Captain"]))


def test_card_speakers_match_trimmed_case_insensitive_and_discord_names(tmp_path):
    write(tmp_path, "chat.txt", "Kit: one\nAuntie  JUNO: two\n")
    (row,) = build(tmp_path, name="whoever", card=PersonaCard(speakers=["  auntie juno "])).train.to_list()
    assert row["messages"][-1]["content"] == "two"
    discord = build_examples(load_logs(FIXTURES / "discord"), "x", PersonaCard(speakers=["junebug"]), LOOSE)
    assert discord.character == ["Juno"]
    assert discord.train.to_list()[0]["messages"][-1]["content"] == "New bulb, sailor! Twice as bright."


def test_folder_name_with_dashes_matches_a_spaced_speaker(tmp_path):
    write(tmp_path, "chat.txt", "Kit: hi\nMr Pell: Morning.\n")
    assert build(tmp_path, name="mr-pell").character == ["Mr Pell"]


def test_too_few_examples_says_how_many(tmp_path):
    write(tmp_path, "chat.txt", transcript_sessions(2))
    with pytest.raises(TooFewExamples, match="only 4 training examples") as caught:
        build(tmp_path, settings=ExampleSettings())
    assert "at least 20" in str(caught.value)
    assert caught.value.examples.character_turns == 4
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TooFewExamples, match="only 0"):
        build(empty, settings=ExampleSettings())


def test_settings_validate_and_read_card_overrides():
    settings = ExampleSettings.from_overrides({"window": 3, "session_gap_hours": 2, "epochs": 4})
    assert (settings.window, settings.session_gap, settings.min_examples) == (3, timedelta(hours=2), 20)
    for bad in (
        {"window": 0},
        {"window": True},
        {"heldout_fraction": 1.0},
        {"min_examples": -1},
        {"session_gap_hours": "x"},
        {"session_gap_hours": 0},
        {"name_prefixes": "yes"},
    ):
        with pytest.raises(ValueError):
            ExampleSettings.from_overrides(bad)


def test_report_shows_files_formats_speakers_problems_and_split():
    result = load_logs(FIXTURES)
    examples = build_examples(result, "juno", PersonaCard(), LOOSE)
    text = format_report(result, examples, tokens={"train": 1234})
    for expected in (
        "whatsapp/ios.txt: WhatsApp chat export",
        "discord/general.json: DiscordChatExporter JSON",
        "speakers: Juno 5, Kit 3, Mira 2, Pell 1",
        "broken/empty.txt: PROBLEM: empty file",
        "broken/truncated.json: PROBLEM: bad JSON at line 4",
        f"Training examples: {examples.train_examples}",
        f"Held-out examples: {examples.heldout_examples}",
        "Tokens: train 1,234",
        "Character: Juno (by name)",
    ):
        assert expected in text
    failed = format_report(result, None, error="no speaker in the logs is named 'x'")
    assert "ERROR: no speaker in the logs is named 'x'" in failed and "Training examples" not in failed


EXAMPLE_PERSONAS = sorted(p for p in (REPO / "personas").glob("*/logs") if p.is_dir())


@pytest.mark.parametrize("logs", EXAMPLE_PERSONAS, ids=[p.parent.name for p in EXAMPLE_PERSONAS])
def test_example_personas_load_cleanly_and_give_enough_examples(logs):
    result = load_logs(logs)
    assert result.all_problems() == []
    examples = build_examples(result, logs.parent.name, load_card(logs.parent))
    assert examples.examples >= 150
    assert examples.heldout_examples > 0
