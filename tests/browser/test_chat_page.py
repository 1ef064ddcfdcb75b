"""The chat page in Debian's chromium, against the real server (vLLM with the bundled SmolLM2).

The personas are the examples, served from their cards. Each step leaves a screenshot in
``test-artifacts/browser/``. Replies are checked against what the API answers for the same messages
at temperature 0, through the official ``openai`` client.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import expect

from store.card import load_card
from tests.browser.chat_page import REPLY_TIMEOUT_MS, ChatPage, words
from tests.support.polling import wait_until

pytestmark = pytest.mark.browser


REPLY_TOKENS = 24
PHONE = {"width": 390, "height": 844}


def api_reply(server, model: str, messages: list[dict], **params) -> tuple[str, str | None]:
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    response = client.chat.completions.create(model=model, messages=messages, **params)
    return response.choices[0].message.content, response.system_fingerprint


@pytest.fixture()
def desktop(browser, live_server, request) -> Iterator[ChatPage]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield ChatPage(page, live_server.url, request.node.name.removeprefix("test_"))
    context.close()


def test_chat_with_a_persona(desktop: ChatPage, live_server) -> None:
    wren = load_card(live_server.personas_dir / "wren")
    corvin = load_card(live_server.personas_dir / "corvin")
    page = desktop.open()
    listed = page.options()
    for name in ("Wren", "Corvin Halloway", "Zeph"):
        assert f"{name} · served from its card" in listed, listed
    page.shot("01-opened")

    page.pick(wren, "wren")
    expect(page.page.locator("#persona-description")).to_contain_text("The Crooked Loaf")
    assert (page.slider("temperature"), page.slider("top-p"), page.slider("max-tokens")) == (
        wren.sampling.temperature,
        wren.sampling.top_p,
        wren.sampling.max_tokens,
    ), "the sliders start at the card's sampling defaults"
    assert page.bot_rows().count() == 1 and page.user_rows().count() == 0
    page.shot("02-greeting")

    page.set_slider("temperature", 0)
    page.set_slider("max-tokens", REPLY_TOKENS)
    question = "What's the secret to a good scone?"
    page.watch_stream()
    reply = page.send(question)
    page.shot("03-reply")
    assert reply, "an empty reply"
    assert page.caption() == "wren · card"
    partial = [t for t in page.seen() if 0 < len(words(t)) < len(words(reply)) and words(reply).startswith(words(t))]
    assert partial, f"the reply did not stream in (texts seen: {page.seen()})"

    expected, fingerprint = api_reply(
        live_server,
        "wren",
        [{"role": "assistant", "content": wren.greeting}, {"role": "user", "content": question}],
        temperature=0,
        top_p=page.slider("top-p"),
        max_tokens=REPLY_TOKENS,
    )
    assert fingerprint == "card"
    assert words(reply) == words(expected), f"page: {reply!r}\napi:  {expected!r}"

    again = page.retry()
    assert page.user_rows().count() == 1, "retry replaces the last reply"
    assert words(again) == words(expected), f"retried: {again!r} ({page.page.locator('#chat-error').all_inner_texts()})"

    page.pick(corvin, "corvin")
    assert page.user_rows().count() == 0 and page.bot_rows().count() == 1, "Corvin's chat is his own"
    page.shot("04-switched")

    page.pick(wren, "wren")
    expect(page.user_rows()).to_have_count(1)
    expect(page.user_rows().first).to_contain_text(question)

    page.click("undo")
    expect(page.user_rows()).to_have_count(0)
    expect(page.page.locator("#message textarea")).to_have_value(question)
    page.set_slider("temperature", 0)
    page.set_slider("max-tokens", REPLY_TOKENS)
    assert words(page.send(enter=True)) == words(expected), "resent with Enter after undo"
    page.shot("05-resent")

    page.click("new-session")
    expect(page.user_rows()).to_have_count(0)
    expect(page.bot_rows()).to_have_count(1)
    expect(page.bot_rows().first).to_contain_text(wren.greeting[:40])
    page.shot("06-new-session")


def test_a_message_sent_as_soon_as_the_page_shows_is_answered(desktop: ChatPage, live_server) -> None:
    """Typed before the first paint has set the persona list: answered by the persona the page then
    shows, never refused with "pick a persona"."""
    page = desktop.page
    page.goto(live_server.url + "/ui", wait_until="domcontentloaded")
    box = page.locator("#message textarea")
    expect(box).to_be_visible(timeout=60_000)
    box.fill("Hello there!")
    page.locator("#send").click()
    expect(desktop.user_rows()).to_have_count(1, timeout=30_000)
    desktop.wait_idle()
    expect(page.locator("#chat-error")).to_be_hidden()
    assert desktop.reply()
    name = desktop.caption().split(" · ")[0]
    title = load_card(live_server.personas_dir / name).title(name)
    assert page.locator("#persona-picker input").input_value().startswith(f"{title} · ")
    desktop.shot("01-answered")


def metric(server, name: str, **labels: str) -> float:
    """One value of the server's ``/metrics`` (0 before it is first counted)."""
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in httpx.get(server.url + "/metrics", timeout=30).text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_stop_ends_the_reply(desktop: ChatPage, live_server) -> None:
    zeph = load_card(live_server.personas_dir / "zeph")
    page = desktop.open()
    page.pick(zeph, "zeph")
    page.set_slider("temperature", 0)
    page.set_slider("max-tokens", 400)
    cut_short = {"name": "persona_chat_requests_total", "kind": "card", "status": "error"}
    before = metric(live_server, **cut_short)
    page.start("Tell me everything about every planet, one by one, in great detail.")
    expect(page.page.locator("#stop")).to_be_visible()
    page.page.wait_for_function(
        "() => { const r = document.querySelectorAll('#chat .bot-row'); const t = r[r.length - 1].innerText;"
        " return r.length > 1 && t.replace('zeph · card', '').trim().length > 0; }",
        timeout=REPLY_TIMEOUT_MS,
    )
    page.click("stop")
    expect(page.page.locator("#send")).to_be_visible(timeout=15_000)
    # The server counts a request that ended before the engine had finished it: Stop really stopped
    # the generation, so nothing more can come; the page then shows what came, and only that.
    wait_until(lambda: metric(live_server, **cut_short) == before + 1, 30, "request cut short by Stop")
    page.wait_still()
    stopped = page.reply()
    assert stopped and page.caption() == "zeph · card"
    page.shot("01-stopped")


def test_errors_show_the_api_message(desktop: ChatPage, live_server, own_persona) -> None:
    page = desktop.open()
    wren = load_card(live_server.personas_dir / "wren")
    page.pick(wren, "wren")
    page.set_slider("max-tokens", 1024)
    page.start("Hello!", shown=False)
    error = page.page.locator("#chat-error")
    expect(error).to_contain_text("maximum context length is 1024 tokens", timeout=30_000)
    expect(page.user_rows()).to_have_count(0)
    expect(page.page.locator("#message textarea")).to_have_value("Hello!")
    page.shot("01-too-long")

    # A persona dropped in shows up in the list without a reload; removed, it answers with the API's 404.
    folder = own_persona(copy_of="zeph")
    name = folder.name
    card = (folder / "persona.yaml").read_text()
    card = re.sub(r"(?m)^display_name: .*$", "display_name: Pip", card)
    card = re.sub(r"(?m)^greeting: .*$", "greeting: pip pip, hello there!", card)
    (folder / "persona.yaml").write_text(card)
    page.wait_for_option("Pip · served from its card")
    page.pick(load_card(folder), name)
    page.shot("02-new-persona")
    shutil.rmtree(folder)
    page.start("Are you still there?", shown=False)
    expect(error).to_contain_text(f"The model '{name}' does not exist", timeout=30_000)
    expect(page.user_rows()).to_have_count(0)
    expect(page.page.locator("#persona-card")).to_contain_text("no longer in the personas folder", timeout=30_000)
    assert "Pip · served from its card" not in page.options()
    page.shot("03-removed")


def test_phone_width(browser, live_server) -> None:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        page = ChatPage(context.new_page(), live_server.url, "phone").open()
        zeph = load_card(live_server.personas_dir / "zeph")
        page.pick(zeph, "zeph")
        page.shot("01-greeting")

        def inside(selector: str) -> dict:
            box = page.page.locator(selector).bounding_box()
            assert box, f"{selector} is not shown"
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"] + 1, f"{selector} overflows: {box}"
            return box

        for selector in ("#persona-picker", "#persona-card", "#chat", "#message", "#send", "#chat-actions"):
            inside(selector)
        box = inside("#message")
        assert box["y"] + box["height"] <= PHONE["height"], "the message box is below the first screen"
        assert page.page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

        page.set_slider("temperature", 0)
        page.set_slider("max-tokens", 16)
        page.page.locator("#chat").scroll_into_view_if_needed()
        assert page.send("what's up tonight?")
        assert page.caption() == "zeph · card"
        assert page.page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        inside("#chat")
        page.page.evaluate("window.scrollTo(0, 0)")
        page.shot("02-reply")
        page.shot("03-full", full_page=True)
    finally:
        context.close()
