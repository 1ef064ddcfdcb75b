"""The chat page without a browser: its helpers, and its handlers over a fake engine.

The handlers must send what an API client sends: same persona resolution, prompt and sampling.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.app import create_app
from service.errors import model_not_found
from service.personas.protocol import PersonaStatus, VersionStatus
from service.protocol import ChatCompletionRequest
from service.settings import ServeSettings
from service.ui import session
from service.ui.page import NOT_READY, ChatPage
from store.card import SamplingDefaults
from store.jobs import JobStore
from store.progress import TrainingProgress
from tests.support.polling import wait_until
from tests.support.watching import watching

from .fake_engine import SERVE_ONLY, FakeEngine
from .fake_store import write_report, write_version

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # gr.Warning outside a page warns


# ---------------------------------------------------------------------- helpers


def status(
    name: str = "wren", *, live: str | None = None, versions: tuple[str, ...] = (), training: float | None = None
) -> PersonaStatus:
    progress = (
        TrainingProgress(state="running", step=int(training * 100), total_steps=100) if training is not None else None
    )
    return PersonaStatus(
        name=name,
        display_name=name.title(),
        description=f"{name.title()} bakes.",
        greeting="Hello, petal!",
        status="training" if progress else ("trained" if live else "card"),
        live_version=live,
        versions=[VersionStatus(version=v, live=v == live) for v in versions],
        example_questions=[],
        training=progress,
    )


def test_model_id_follows_the_live_version_or_names_one() -> None:
    assert session.model_id("wren", session.LIVE) == "wren"
    assert session.model_id("wren", None) == "wren"
    assert session.model_id("wren", "v1") == "wren@v1"


def test_build_request_is_what_an_api_client_sends() -> None:
    history = [
        session.assistant_turn("Hello, petal!"),
        session.user_turn("Hi"),
        session.assistant_turn("Oh crumbs.", "wren · v2"),
        session.user_turn("Scones?"),
    ]
    request = session.build_request("wren", "v2", history, 0.0, 0.9, 24.0)
    assert request == ChatCompletionRequest(
        model="wren@v2",
        messages=[
            {"role": "assistant", "content": "Hello, petal!"},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Oh crumbs."},
            {"role": "user", "content": "Scones?"},
        ],
        temperature=0.0,
        top_p=0.9,
        max_tokens=24,
        stream=True,
    )


def test_build_request_refuses_what_the_api_refuses() -> None:
    with pytest.raises(ValidationError):
        session.build_request("wren", None, [session.user_turn("Hi")], 3.0, 1.0, 10)


def test_captions_name_the_version_and_stay_out_of_the_prompt() -> None:
    history = [
        session.assistant_turn("Hello!"),
        session.user_turn("<b>hi</b>"),
        session.assistant_turn("Well.", "wren · v2"),
    ]
    shown = session.to_chatbot(history)
    assert shown[0] == {"role": "assistant", "content": "Hello!"}
    assert shown[1] == {"role": "user", "content": "<b>hi</b>"}
    assert shown[2]["content"] == 'Well.\n\n<span class="reply-version">wren · v2</span>'
    only_caption = session.to_chatbot([session.assistant_turn("", "wren · card")])[0]["content"]
    assert only_caption == '<span class="reply-version">wren · card</span>'
    assert session.caption("wren", "card") == "wren · card"
    sent = session.build_request("wren", None, history, None, None, None).messages
    assert [m.text() for m in sent] == ["Hello!", "<b>hi</b>", "Well."]


def test_undo_and_retry_keep_the_greeting() -> None:
    greeting = session.new_session("Hello!")
    assert greeting == [session.assistant_turn("Hello!")]
    assert session.new_session(None) == []
    history = greeting + [
        session.user_turn("one"),
        session.assistant_turn("a", "w · card"),
        session.user_turn("two"),
        session.assistant_turn("b", "w · card"),
    ]
    kept, text = session.undo(history)
    assert text == "two" and kept == history[:3]
    assert session.for_retry(history) == history[:4]
    assert session.undo(greeting) == (greeting, "")
    assert session.for_retry(greeting) is None


def test_persona_list_shows_each_status() -> None:
    assert session.persona_label(status()) == "Wren · served from its card"
    assert session.persona_label(status(live="v2", versions=("v1", "v2"))) == "Wren · trained v2"
    assert session.persona_label(status(live="v1", versions=("v1",), training=0.4)) == "Wren · training 40%"
    assert session.persona_choices([status(), status("zeph")]) == [
        ("Wren · served from its card", "wren"),
        ("Zeph · served from its card", "zeph"),
    ]


def test_version_choices_put_live_first_then_newest() -> None:
    assert session.version_choices(status()) == [("live (card)", session.LIVE)]
    assert session.version_choices(status(live="v2", versions=("v1", "v2", "v10"))) == [
        ("live (v2)", session.LIVE),
        ("v10", "v10"),
        ("v2", "v2"),
        ("v1", "v1"),
    ]
    card = session.card_markdown(status(live="v2", versions=("v1", "v2")))
    assert card.startswith("### Wren\n") and "trained v2" in card and "v1, v2" in card


def test_sampling_defaults_come_from_the_card_within_the_context() -> None:
    assert session.sampling_defaults(SamplingDefaults(temperature=0.7, top_p=0.9, max_tokens=220), 1024) == (
        0.7,
        0.9,
        220,
    )
    assert session.sampling_defaults(SamplingDefaults(), 1024) == (1.0, 1.0, session.DEFAULT_MAX_TOKENS)
    assert session.sampling_defaults(SamplingDefaults(max_tokens=5000), 512) == (1.0, 1.0, 512)


def test_error_text_is_one_line_without_a_traceback() -> None:
    assert session.error_text(model_not_found("ghost")) == "The model 'ghost' does not exist"
    with pytest.raises(ValidationError) as caught:
        ChatCompletionRequest(model="x", messages=[{"role": "user", "content": "a"}], top_p=0)
    assert session.error_text(caught.value).startswith("top_p: ")
    assert session.error_text(RuntimeError("engine died\nTraceback ...")) == "The reply failed: engine died"


# ---------------------------------------------------------------------- the page over a fake engine


@pytest.fixture()
def personas(tmp_path: Path, base_model) -> Path:
    root = tmp_path / "personas"
    alpha = root / "alpha"
    (alpha / "logs").mkdir(parents=True)
    (alpha / "persona.yaml").write_text(
        "display_name: Alpha\ndescription: Says ahoy.\ngreeting: Ahoy there!\n"
        "example_questions: ['Where to?']\nsampling:\n  temperature: 0.3\n  top_p: 0.8\n  max_tokens: 5\n"
    )
    write_version(alpha, 1, base_model.hash, b"w1")
    write_version(alpha, 2, base_model.hash, b"w2")
    beta = root / "beta"
    (beta / "logs").mkdir(parents=True)
    (beta / "persona.yaml").write_text("display_name: Beta\n")
    return root


@pytest.fixture()
def engine() -> FakeEngine:
    return FakeEngine(max_model_len=512)


@pytest.fixture()
def served(personas: Path, cache_dir: Path, engine: FakeEngine, base_model):
    made: list[FakeEngine] = []

    def factory(settings, base):
        made.append(engine)
        return engine

    settings = ServeSettings(
        personas_dir=personas, cache_dir=cache_dir, base_model=str(base_model.path), max_model_len=512, **SERVE_ONLY
    )
    app = create_app(settings, engine_factory=factory)
    with TestClient(app) as client:
        client.made = made
        yield client


@pytest.fixture()
def page(served: TestClient) -> ChatPage:
    page = ChatPage(served.app)
    page.build()
    return page


def value(update: Any) -> Any:
    """The value a handler sets: plain, or on a component used as an update."""
    return update.constructor_args.get("value") if hasattr(update, "constructor_args") else update


def unchanged(updates: dict) -> bool:
    """A handler's "no change": a non-empty dict of skips (Gradio reads ``{}`` as one value)."""
    return bool(updates) and all(
        isinstance(v, dict) and v.get("__type__") == "update" and len(v) == 1 for v in updates.values()
    )


async def collect(updates) -> list[dict]:
    return [u async for u in updates]


def texts(chatbot: list[dict]) -> list[str]:
    return [m["content"] for m in chatbot]


def test_the_page_is_mounted_with_the_api_and_one_engine(served: TestClient) -> None:
    assert served.made == [served.app.state.chat.engine]
    page = served.get("/ui/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    root = served.get("/", follow_redirects=False)
    assert root.status_code in (302, 307) and root.headers["location"] == "/ui"


def test_with_api_keys_the_page_asks_for_one(personas: Path, cache_dir: Path, engine: FakeEngine, base_model) -> None:
    settings = ServeSettings(
        personas_dir=personas, cache_dir=cache_dir, base_model=str(base_model.path), api_keys=["sekret"], **SERVE_ONLY
    )
    with TestClient(create_app(settings, engine_factory=lambda s, b: engine)) as client:
        assert client.get("/ui/config").status_code == 401
        login = client.post("/ui/login", data={"username": "me", "password": "sekret"})
        assert login.status_code == 200
        assert client.get("/ui/config").status_code == 200


def test_load_picks_the_first_persona_with_its_greeting_and_sampling(page: ChatPage) -> None:
    shown = page.load({})
    assert value(shown[page.ui.persona]) == "alpha"
    assert shown[page.ui.persona].constructor_args["choices"] == [
        ("Alpha · trained v2", "alpha"),
        ("Beta · served from its card", "beta"),
    ]
    assert texts(value(shown[page.ui.chatbot])) == ["Ahoy there!"]
    assert (shown[page.ui.temperature], shown[page.ui.top_p], shown[page.ui.max_tokens]) == (0.3, 0.8, 5)
    assert shown[page.ui.version].constructor_args["choices"] == [("live (v2)", "live"), ("v2", "v2"), ("v1", "v1")]
    assert "Says ahoy." in shown[page.ui.description]


def test_the_card_picture_is_shown_when_the_folder_has_one(page: ChatPage, personas: Path) -> None:
    from PIL import Image

    assert page.select("alpha", {})[page.ui.picture].constructor_args == {"value": None, "visible": False}
    Image.new("RGB", (8, 8), (200, 120, 40)).save(personas / "alpha" / "avatar.png")
    shown = page.select("alpha", {})[page.ui.picture].constructor_args
    assert shown["visible"] is True and shown["value"].size == (8, 8)


async def test_send_streams_the_reply_the_api_gives(page: ChatPage, served: TestClient, engine: FakeEngine) -> None:
    chats = page.load({})[page.ui.chats]
    updates = await collect(page.send("  Where to?  ", "alpha", "live", 0.0, 0.5, 4, chats))
    first, last = updates[0], updates[-1]
    assert first[page.ui.message] == "" and texts(first[page.ui.chatbot]) == ["Ahoy there!", "Where to?"]
    assert first[page.ui.stop_btn].constructor_args["visible"] is True
    assert len(updates) > 3, "the reply streams in pieces"
    reply = last[page.ui.chatbot][-1]["content"]
    assert reply.startswith("[alpha@v2#") and reply.endswith('<span class="reply-version">alpha · v2</span>')
    assert last[page.ui.send_btn].constructor_args["visible"] is True
    page_prompt, page_params, page_adapter = engine.calls[-1]

    api = served.post(
        "/v1/chat/completions",
        json={
            "model": "alpha",
            "temperature": 0.0,
            "top_p": 0.5,
            "max_tokens": 4,
            "messages": [{"role": "assistant", "content": "Ahoy there!"}, {"role": "user", "content": "Where to?"}],
        },
    )
    assert api.status_code == 200
    assert engine.calls[-1] == (page_prompt, page_params, page_adapter)
    assert chats["alpha"][-1]["content"] == api.json()["choices"][0]["message"]["content"]
    assert chats["alpha"][-1]["by"] == "alpha · v2"


async def test_an_empty_message_changes_nothing(page: ChatPage, engine: FakeEngine) -> None:
    chats = page.load({})[page.ui.chats]
    assert [unchanged(u) for u in await collect(page.send("   ", "alpha", "live", 1.0, 1.0, 3, chats))] == [True]
    assert (
        unchanged(page.undo(None, chats))
        and unchanged(page.new_session(None, chats))
        and unchanged(page.select(None, chats))
    )
    assert engine.calls == []


async def test_an_older_version_answers_when_picked(page: ChatPage, engine: FakeEngine) -> None:
    chats = page.load({})[page.ui.chats]
    await collect(page.send("Hi", "alpha", "v1", 1.0, 1.0, 3, chats))
    assert chats["alpha"][-1]["by"] == "alpha · v1"
    assert engine.calls[-1][2].name.startswith("alpha@v1#")


async def test_retry_undo_and_new_session(page: ChatPage, engine: FakeEngine) -> None:
    chats = page.load({})[page.ui.chats]
    await collect(page.send("Hi", "alpha", "live", 1.0, 1.0, 3, chats))
    assert len(chats["alpha"]) == 3
    updates = await collect(page.retry("alpha", "v1", 1.0, 1.0, 2, chats))
    assert texts(updates[0][page.ui.chatbot]) == ["Ahoy there!", "Hi"]
    assert [t["role"] for t in chats["alpha"]] == ["assistant", "user", "assistant"] and chats["alpha"][-1][
        "by"
    ] == "alpha · v1"
    assert len(engine.calls) == 2
    undone = page.undo("alpha", chats)
    assert undone[page.ui.message] == "Hi" and texts(undone[page.ui.chatbot]) == ["Ahoy there!"]
    assert page.undo("alpha", chats)[page.ui.message] == ""
    await collect(page.send("Again", "alpha", "live", 1.0, 1.0, 3, chats))
    fresh = page.new_session("alpha", chats)
    assert texts(fresh[page.ui.chatbot]) == ["Ahoy there!"] and chats["alpha"] == session.new_session("Ahoy there!")
    nothing = await collect(page.retry("alpha", "live", 1.0, 1.0, 3, chats))
    assert len(nothing) == 1 and unchanged(nothing[0]) and len(engine.calls) == 3


async def test_stop_ends_the_reply_and_keeps_what_came(page: ChatPage) -> None:
    chats = page.load({})[page.ui.chats]
    me, other = SimpleNamespace(session_hash="me"), SimpleNamespace(session_hash="other")
    replying = page.send("Hi", "alpha", "live", 1.0, 1.0, 10, chats, me)
    updates = [await anext(replying) for _ in range(4)]  # the message, the empty reply, two pieces
    page.stop(other)
    updates.append(await anext(replying))
    page.stop(me)
    updates += [u async for u in replying]
    assert chats["alpha"][-1]["content"] == "[alpha@v2#1] one two", "stopped after three pieces"
    assert updates[-1][page.ui.stop_btn].constructor_args == {"visible": False, "interactive": True}
    assert "me" not in page.stopping
    again = await collect(page.send("More", "alpha", "live", 1.0, 1.0, 3, chats, me))
    assert chats["alpha"][-1]["content"] == "[alpha@v2#1] one two", "an old Stop does not cut the next reply"
    assert len(again) > 3


async def test_each_persona_keeps_its_own_conversation(page: ChatPage) -> None:
    chats = page.load({})[page.ui.chats]
    await collect(page.send("Hi", "alpha", "live", 1.0, 1.0, 3, chats))
    assert unchanged(page.pick("alpha", "alpha", chats)), "the list fires again for the persona on show"
    beta = page.pick("beta", "alpha", chats)
    assert beta[page.ui.shown] == "beta"
    chatbot = beta[page.ui.chatbot]
    assert value(chatbot) == [] and chatbot.constructor_args["placeholder"] == "Say hello to Beta."
    await collect(page.send("Hello", "beta", "live", 1.0, 1.0, 3, chats))
    assert chats["beta"][-1]["by"] == "beta · card"
    back = page.select("alpha", chats)
    assert texts(value(back[page.ui.chatbot]))[:2] == ["Ahoy there!", "Hi"]


def error_of(update: dict, page: ChatPage) -> str:
    shown = update[page.ui.error]
    assert shown.constructor_args["visible"] is True
    return shown.constructor_args["value"]


async def test_a_removed_persona_gives_the_api_404_and_keeps_the_message(page: ChatPage, personas: Path) -> None:
    chats = page.load({})[page.ui.chats]
    shutil.rmtree(personas / "alpha")
    last = (await collect(page.send("Still there?", "alpha", "live", 1.0, 1.0, 3, chats)))[-1]
    assert "The model 'alpha' does not exist" in error_of(last, page)
    assert last[page.ui.message] == "Still there?"
    assert texts(last[page.ui.chatbot]) == ["Ahoy there!"] and chats["alpha"] == session.new_session("Ahoy there!")
    assert last[page.ui.send_btn].constructor_args["visible"] is True


async def test_a_reply_longer_than_the_context_gives_the_api_400(page: ChatPage) -> None:
    chats = page.load({})[page.ui.chats]
    last = (await collect(page.send("Hi", "alpha", "live", 1.0, 1.0, 512, chats)))[-1]
    assert "maximum context length is 512 tokens" in error_of(last, page)


async def test_a_missing_version_gives_the_api_404(page: ChatPage) -> None:
    chats = page.load({})[page.ui.chats]
    last = (await collect(page.send("Hi", "alpha", "v9", 1.0, 1.0, 3, chats)))[-1]
    assert "has no version 'v9'" in error_of(last, page)


async def test_while_the_engine_loads_the_page_says_so(page: ChatPage, served: TestClient) -> None:
    chats = page.load({})[page.ui.chats]
    served.app.state.chat, chat = None, served.app.state.chat
    try:
        last = (await collect(page.send("Hi", "alpha", "live", 1.0, 1.0, 3, chats)))[-1]
    finally:
        served.app.state.chat = chat
    assert error_of(last, page) == f"⚠️ {NOT_READY}"


async def test_an_engine_failure_mid_reply_is_one_line(page: ChatPage, engine: FakeEngine, monkeypatch) -> None:
    async def broken(*args, **kwargs):
        raise RuntimeError("out of memory\n  File ...")
        yield  # an async generator, like the engine's

    monkeypatch.setattr(engine, "generate", broken)
    chats = page.load({})[page.ui.chats]
    last = (await collect(page.send("Hi", "alpha", "live", 1.0, 1.0, 3, chats)))[-1]
    assert error_of(last, page) == "⚠️ The reply failed: out of memory"


def next_refresh(page: ChatPage, name: str, seen: str, timeout: float = 15.0) -> dict:
    """The first tick that changes something: the watcher needs a moment to see a change."""
    return wait_until(
        lambda: (updates := page.refresh(name, seen)) and not unchanged(updates) and updates,
        timeout,
        "the page to show the change",
    )


def later_than(path: Path, scratch: Path) -> None:
    """Wait until the file system's clock has moved past ``path``'s modification time, so the next
    write there changes it (a token made of modification times would not notice a second write otherwise)."""
    before = path.stat().st_mtime_ns

    def moved() -> bool:
        scratch.touch()
        return scratch.stat().st_mtime_ns > before

    wait_until(moved, 5, f"the clock to pass {path}'s modification time", every=0.001)


def test_refresh_shows_new_and_changed_personas_and_keeps_the_selection(page: ChatPage, personas: Path) -> None:
    shown = page.load({})
    assert unchanged(page.refresh("alpha", shown[page.ui.seen])), "the first tick after loading changes nothing"
    first = page.refresh("alpha", "")
    assert page.ui.persona in first and "value" not in first[page.ui.persona].constructor_args
    assert unchanged(page.refresh("alpha", first[page.ui.seen])), "nothing changed, nothing sent"
    (personas / "gamma" / "logs").mkdir(parents=True)
    (personas / "gamma" / "persona.yaml").write_text("display_name: Gamma\n")
    (personas / "broken").mkdir()
    (personas / "broken" / "persona.yaml").write_text("sampling:\n  temperature: hot\n")
    second = next_refresh(page, "alpha", first[page.ui.seen])
    while "broken" not in second[page.ui.seen]:  # the two folders may be seen one after the other
        second = next_refresh(page, "alpha", second[page.ui.seen])
    assert ("Gamma · served from its card", "gamma") in second[page.ui.persona].constructor_args["choices"]
    assert "broken" in second[page.ui.problems].constructor_args["value"]
    shutil.rmtree(personas / "alpha")
    third = next_refresh(page, "alpha", second[page.ui.seen])
    assert "no longer in the personas folder" in third[page.ui.card]


def test_ticks_read_the_store_only_after_a_change_and_follow_training_progress(page: ChatPage, personas: Path) -> None:
    page.load({})
    watching(page.board.app.state.training.watcher, personas / ".probe")  # it sees what is written next
    seen = page.side("alpha", fresh=True)[page.ui.seen]
    reads = page.board.reads
    for _ in range(5):
        assert unchanged(page.refresh("alpha", seen))
    assert page.board.reads == reads, "ticks that find nothing new read nothing"
    jobs = JobStore(personas)
    progress = TrainingProgress(state="running", step=4, total_steps=10)
    job = jobs.create("alpha", "api", status="running", progress=progress)
    updates = next_refresh(page, "alpha", seen)
    assert "training 40%" in updates[page.ui.card]
    later_than(personas / ".jobs", personas / ".clock")
    jobs.update(job.id, progress=TrainingProgress(state="running", step=7, total_steps=10))
    later = next_refresh(page, "alpha", updates[page.ui.seen])
    assert "training 70%" in later[page.ui.card]
    assert ("Alpha · training 70%", "alpha") in later[page.ui.persona].constructor_args["choices"]


async def test_a_message_sent_before_the_first_paint_goes_to_the_persona_it_shows(page: ChatPage) -> None:
    updates = await collect(page.send("Hi", None, "live", 1.0, 1.0, 3, {}))
    assert value(updates[0][page.ui.persona]) == "alpha"
    last = updates[-1]
    assert page.ui.error not in last or last[page.ui.error].constructor_args.get("visible") is not True
    assert texts(last[page.ui.chatbot])[:2] == ["Ahoy there!", "Hi"]
    assert last[page.ui.chatbot][-1]["content"].startswith("[alpha@v2#")


# ---------------------------------------------------------------------- new persona, persona buttons


def chat_export(tmp_path: Path, name: str, character: str, other: str, turns: int) -> str:
    path = tmp_path / "picked" / name
    path.parent.mkdir(exist_ok=True)
    lines = [f"{who}: line {n} of {name} from {who}" for n in range(turns) for who in (other, character)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


async def test_new_persona_shows_the_report_then_creates_and_shows_the_persona(
    page: ChatPage, personas: Path, tmp_path: Path
) -> None:
    panel = page.new_persona
    files = [chat_export(tmp_path, "one.txt", "Nova", "Sam", 12), chat_export(tmp_path, "two.txt", "Sam", "Nova", 12)]
    shown = await panel.picked(files, "")
    report = shown[panel.report]
    assert "| one.txt | plain transcript | 24 |" in report
    assert "not obvious" in report and "Nova (24)" in report
    speakers = shown[panel.speakers].constructor_args
    assert speakers["visible"] is True and set(speakers["choices"]) == {"Nova", "Sam"}
    assert shown[panel.train].constructor_args["interactive"] is True

    refused = await panel.create("Nova Star", shown[panel.upload], [], {})
    assert "name" in refused[panel.error].constructor_args["value"]
    no_speaker = await panel.create("nova", shown[panel.upload], [], {})  # a name that matches: no pick needed
    assert no_speaker[page.ui.shown] == "nova", no_speaker.get(panel.error)
    assert value(no_speaker[page.ui.persona]) == "nova"
    assert no_speaker[page.ui.tabs].constructor_args["selected"] == "chat"
    assert "queued" in no_speaker[page.ui.card]
    assert sorted(p.name for p in (personas / "nova" / "logs").iterdir()) == ["one.txt", "two.txt"]
    assert not (personas / "nova" / "persona.yaml").exists(), "the name found the character: no card needed"
    assert [(j.persona, j.source) for j in JobStore(personas).all()] == [("nova", "page")]

    again = await panel.picked(files, "")
    exists = await panel.create("nova", again[panel.upload], ["Nova"], {})
    assert "a persona named 'nova' exists; pick another name" in exists[panel.error].constructor_args["value"]
    unknown = await panel.create("kit", again[panel.upload], ["Kit"], {})
    assert "'Kit' is not a speaker in the upload" in unknown[panel.error].constructor_args["value"]
    picked = await panel.create("listener", again[panel.upload], ["Sam"], {})
    assert picked[page.ui.shown] == "listener"
    assert (personas / "listener" / "persona.yaml").read_text() == "speakers:\n- Sam\n"


async def test_new_persona_says_what_is_wrong_with_a_file(page: ChatPage, tmp_path: Path) -> None:
    panel = page.new_persona
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    shown = await panel.picked([str(empty)], "")
    assert "empty.txt" in shown[panel.error].constructor_args["value"] and shown[panel.upload] is None
    assert shown[panel.train].constructor_args["interactive"] is False
    nothing = await panel.create("zed", None, [], {})
    assert "Pick the persona's chat exports first" in nothing[panel.error].constructor_args["value"]


def test_persona_buttons_roll_back_pin_and_remove(page: ChatPage, personas: Path) -> None:
    buttons = page.buttons
    chats = page.load({})[page.ui.chats]
    rolled = buttons.roll_back("alpha")
    assert "trained v1" in rolled[page.ui.card]
    nothing_earlier = buttons.roll_back("alpha")
    assert nothing_earlier[page.ui.error].constructor_args["visible"] is True and page.ui.card not in nothing_earlier
    pinned = buttons.toggle_pin("alpha")
    assert value(pinned[buttons.pin]) == "Unpin"
    assert value(buttons.toggle_pin("alpha")[buttons.pin]) == "Pin"
    assert buttons.toggle_pin("beta")[page.ui.error].constructor_args["visible"] is True, "nothing to pin"
    queued = buttons.queue("beta")
    assert [(j.persona, j.source) for j in JobStore(personas).all()] == [("beta", "page")]
    assert "queued (1)" in queued[page.ui.card]
    asked = buttons.ask("alpha")
    assert asked[buttons.confirm].constructor_args["visible"] is True and "alpha" in asked[buttons.question]
    gone = buttons.removed("alpha", chats)
    assert not (personas / "alpha").exists() and value(gone[page.ui.persona]) == "beta"
    assert all(name != "alpha" for _, name in gone[page.ui.persona].constructor_args["choices"])


def test_the_version_s_fidelity_figures_sit_beside_the_version_picker(page: ChatPage, personas: Path) -> None:
    systems = {
        "base": {"perplexity": 110.0, "centroid_similarity": 0.31, "session_variation": 0.7},
        "card": {"perplexity": 91.0, "centroid_similarity": 0.4, "session_variation": 0.56},
        "adapter": {"perplexity": 60.0, "centroid_similarity": 0.45, "session_variation": 0.5},
    }
    write_report(personas / "alpha" / "adapters" / "v1", systems, {"go_live": True, "status": "live"})
    assert value(page.select("alpha", {})[page.ui.fidelity]) == ""  # v2 is live and has no report
    picked = page.show_fidelity("alpha", "v1")
    assert picked.startswith("**v1 against the card alone** · live") and "| adapter | 60.0 | 0.45 |" in picked
    assert page.show_fidelity("alpha", "v2") == ""


def test_a_persona_with_an_invalid_card_is_listed_and_shows_its_error_when_picked(
    page: ChatPage, personas: Path
) -> None:
    (personas / "broken").mkdir()
    (personas / "broken" / "persona.yaml").write_text("sampling:\n  temperature: hot\n")
    shown = page.load({})
    assert value(shown[page.ui.persona]) == "alpha", "the first servable persona is picked first"
    assert ("broken · invalid card", "broken") in shown[page.ui.persona].constructor_args["choices"]
    picked = page.pick("broken", "alpha", {})
    assert "invalid card" in picked[page.ui.card]
    error = picked[page.ui.description]
    assert "broken/persona.yaml" in error and "sampling.temperature" in error
    assert value(picked[page.ui.chatbot]) == []
