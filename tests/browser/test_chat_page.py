"""The chat page in Debian's chromium, against the real server (vLLM with the bundled SmolLM2).

The personas are the examples, served from their cards. Each step leaves a screenshot in
``test-artifacts/browser/``. Replies are checked against what the API answers for the same messages
at temperature 0, through the official ``openai`` client.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect, sync_playwright

from service.ui.layout import REFRESH_SECONDS
from store.card import PersonaCard, load_card
from tests.conftest import wait_until

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPLY_TOKENS = 24
REPLY_TIMEOUT_MS = 120_000
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is not installed: run `make test` (it installs Debian's chromium) or apt-get install chromium"
        )
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class ChatPage:
    """Drives ``/ui`` the way a user does: the list, the sliders, the message box, the buttons."""

    def __init__(self, page, url: str, prefix: str) -> None:
        self.page = page
        self.url = url
        self.prefix = prefix

    def open(self) -> ChatPage:
        # The page never reaches "network idle" here (the queue keeps a connection open): wait for elements.
        self.page.goto(self.url + "/ui", wait_until="domcontentloaded")
        expect(self.page.locator("#chat")).to_be_visible(timeout=60_000)
        expect(self.page.locator("#persona-picker input")).not_to_have_value("", timeout=30_000)
        return self

    def shot(self, name: str, full_page: bool = False) -> Path:
        """Save a screenshot of this step, after checking no component shows Gradio's error badge."""
        path = SHOTS / f"{self.prefix}-{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        expect(self.page.get_by_text("Error", exact=True)).to_have_count(0)
        assert "Traceback" not in self.page.content()
        return path

    def open_list(self, elem_id: str):
        """Open a dropdown's list (it opens on focus, so the box is left first)."""
        box = self.page.locator(f"#{elem_id} input")
        box.blur()
        box.click()
        listbox = self.page.locator("ul[role=listbox]")
        expect(listbox).to_be_visible()
        return listbox

    def options(self) -> list[str]:
        """The persona list as shown (opens it and closes it again)."""
        listbox = self.open_list("persona-picker")
        texts = [t.replace("✓", "").strip() for t in listbox.locator("li").all_inner_texts()]
        self.page.keyboard.press("Escape")
        self.page.locator("#persona-picker input").blur()
        return texts

    def wait_for_option(self, label: str, timeout: float = 30) -> None:
        """Wait until the persona list shows ``label``. The page refreshes the list every few seconds
        and an open list closes when it does, so the list is opened again until the deadline."""
        option = self.page.get_by_role("option", name=re.compile(rf"^\W*{re.escape(label)}\s*$"))
        deadline = time.monotonic() + timeout
        while True:
            self.open_list("persona-picker")
            try:
                expect(option).to_be_visible(timeout=int(REFRESH_SECONDS * 1500))
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{label!r} never appeared in the persona list") from None
        self.page.keyboard.press("Escape")
        self.page.locator("#persona-picker input").blur()

    def pick(self, card: PersonaCard, name: str) -> None:
        """Pick a persona from the list; wait until its card, greeting and sampling defaults are shown."""
        title = card.title(name)
        option = self.page.get_by_role("option", name=re.compile(rf"^\W*{re.escape(title)} · "))
        for attempt in range(3):  # the list closes if the page updates it while open (a user clicks again)
            try:
                self.open_list("persona-picker")
                option.click(timeout=5_000)
                break
            except (AssertionError, PlaywrightTimeout):
                if attempt == 2:
                    raise
        expect(self.page.locator("#persona-card")).to_contain_text(title)
        if card.greeting:
            expect(self.bot_rows().first).to_contain_text(card.greeting[:40])
        if card.sampling.max_tokens:
            self.open_sampling()
            expect(self.page.locator("#max-tokens input[type=range]")).to_have_value(str(card.sampling.max_tokens))

    def open_sampling(self) -> None:
        """The sampling sliders sit in an accordion, closed at first (its content renders when opened)."""
        if not self.page.locator("#temperature input[type=number]").is_visible():
            self.page.locator("#sampling").get_by_text("Sampling").click()
        expect(self.page.locator("#temperature input[type=number]")).to_be_visible()

    def set_slider(self, elem_id: str, value: float) -> None:
        self.open_sampling()
        box = self.page.locator(f"#{elem_id} input[type=number]")
        box.fill(str(value))
        box.press("Enter")
        expect(self.page.locator(f"#{elem_id} input[type=range]")).to_have_value(str(value))

    def slider(self, elem_id: str) -> float:
        self.open_sampling()
        return float(self.page.locator(f"#{elem_id} input[type=range]").input_value())

    def bot_rows(self):
        return self.page.locator("#chat .bot-row")

    def user_rows(self):
        return self.page.locator("#chat .user-row")

    def watch_stream(self) -> None:
        """Record every text the last reply shows while it streams in."""
        self.page.evaluate(
            """() => {
                const chat = document.querySelector('#chat');
                window.__seen = [];
                window.__asked = false;  // a new reply is on its way: the chat ended with the user, or an empty reply
                window.__observer && window.__observer.disconnect();
                window.__observer = new MutationObserver(() => {
                    const all = chat.querySelectorAll('.message-row');
                    if (all.length && all[all.length - 1].classList.contains('user-row')) window.__asked = true;
                    const rows = chat.querySelectorAll('.bot-row');
                    const last = rows[rows.length - 1];
                    if (!last) return;
                    const copy = last.cloneNode(true);
                    copy.querySelectorAll('.reply-version').forEach(e => e.remove());
                    const text = copy.innerText.trim();
                    if (!text && last.querySelector('.reply-version')) window.__asked = true;
                    if (text && window.__seen[window.__seen.length - 1] !== text) window.__seen.push(text);
                });
                window.__observer.observe(chat, {subtree: true, childList: true, characterData: true});
            }"""
        )

    def seen(self) -> list[str]:
        return self.page.evaluate("() => window.__seen || []")

    def start(self, text: str | None = None, *, enter: bool = False, shown: bool = True) -> None:
        """Send a message (or what the box holds); unless it is refused, wait until it shows in the chat."""
        users = self.user_rows().count()
        box = self.page.locator("#message textarea")
        if text is not None:
            box.fill(text)
        if enter:
            box.press("Enter")
        else:
            self.page.locator("#send").click()
        if shown:
            expect(self.user_rows()).to_have_count(users + 1, timeout=30_000)

    def wait_idle(self) -> None:
        """Wait until the chat ends with a reply (with its version caption) and the page is ready again."""
        self.page.wait_for_function(
            """() => {
                const rows = document.querySelectorAll('#chat .message-row');
                const last = rows[rows.length - 1];
                const shown = id => { const e = document.getElementById(id); return !!e && e.checkVisibility(); };
                const picker = document.querySelector('#persona-picker input');
                return !!last && last.classList.contains('bot-row') && !!last.querySelector('.reply-version')
                    && !shown('stop') && shown('send') && !!picker && !picker.disabled;
            }""",
            timeout=REPLY_TIMEOUT_MS,
        )
        # The buttons can switch back a moment before the chat has drawn the last chunk of text.
        self.wait_still()

    def wait_still(self) -> None:
        """Wait until the last reply's text has not changed for half a second (drawing has caught up)."""
        self.page.wait_for_function(
            """() => {
                const rows = document.querySelectorAll('#chat .bot-row');
                const text = rows.length ? rows[rows.length - 1].innerText : '';
                const now = performance.now();
                if (window.__lastText !== text) { window.__lastText = text; window.__since = now; }
                return now - window.__since > 500;
            }""",
            timeout=REPLY_TIMEOUT_MS,
            polling=100,
        )

    def send(self, text: str | None = None, *, enter: bool = False) -> str:
        self.start(text, enter=enter)
        self.wait_idle()
        return self.reply()

    def retry(self) -> str:
        """Retry the last turn; the chat changes at once (the old reply goes), then the new one comes."""
        self.watch_stream()
        self.click("retry")
        self.page.wait_for_function("() => window.__asked", timeout=30_000)
        self.wait_idle()
        return self.reply()

    def reply(self) -> str:
        """The last reply's text, without its version caption."""
        return self.bot_rows().last.evaluate(
            "row => { const c = row.cloneNode(true); c.querySelectorAll('.reply-version').forEach(e => e.remove());"
            " return c.innerText.trim(); }"
        )

    def caption(self) -> str:
        return self.bot_rows().last.locator(".reply-version").inner_text().strip()

    def click(self, elem_id: str) -> None:
        self.page.locator(f"#{elem_id}").click()


def words(text: str) -> str:
    """Text as words: what is left when markdown rendering and whitespace are set aside."""
    return re.sub(r"[\W_]+", " ", text).strip()


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
