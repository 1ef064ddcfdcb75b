"""The chat page as a user drives it in the browser: the list, the sliders, the message box, the buttons."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from service.ui.layout import REFRESH_SECONDS
from store.card import PersonaCard
from tests.support.polling import wait_until

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "test-artifacts" / "browser"
REPLY_TIMEOUT_MS = 120_000


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

        def listed() -> bool:
            self.open_list("persona-picker")
            try:
                expect(option).to_be_visible(timeout=int(REFRESH_SECONDS * 1500))
            except AssertionError:
                return False
            return True

        wait_until(listed, timeout, f"{label!r} in the persona list", every=0)
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
        """Type ``value`` into the slider's box; typed again while an update of the page still in flight
        (a persona being shown sets its card's sampling) puts the old value back."""
        self.open_sampling()
        box = self.page.locator(f"#{elem_id} input[type=number]")
        shown = self.page.locator(f"#{elem_id} input[type=range]")
        for _ in range(5):
            box.fill(str(value))
            box.press("Enter")
            try:
                expect(shown).to_have_value(str(value), timeout=2_000)
                break
            except AssertionError:
                continue
        expect(shown).to_have_value(str(value))

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
