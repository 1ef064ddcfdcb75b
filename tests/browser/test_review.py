"""The review tab in Debian's chromium: a persona's generated examples accepted (edited) or rejected,
one at a time, and only the store's review states change."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from store import synthetic
from store.synthetic import Source, SyntheticExample
from tests.browser.chat_page import ChatPage

pytestmark = pytest.mark.browser


def test_review_generated_examples_in_the_page(browser, live_server, own_persona, request) -> None:
    folder = own_persona(copy_of="wren")
    source = Source(url=live_server.url + "/v1", model=folder.name)
    synthetic.write_batch(
        folder,
        1,
        [
            SyntheticExample(id="s1", batch=1, prompt="Any scones left?", reply="Yes.", source=source),
            SyntheticExample(id="s2", batch=1, prompt="Do you sell coffee?", reply="As an AI, I...", source=source),
        ],
    )
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = ChatPage(context.new_page(), live_server.url, request.node.name.removeprefix("test_")).open()
        page.page.get_by_role("tab", name="Review").click()
        prompt = page.page.locator("#review-prompt textarea")
        expect(prompt).to_have_value("Any scones left?", timeout=30_000)
        expect(page.page.locator("#review-header")).to_contain_text("2 of 2 waiting")
        page.shot("01-first")

        page.page.locator("#review-reply textarea").fill("Oh petal, a whole tray, still warm!")
        page.page.locator("#review-accept").click()
        expect(prompt).to_have_value("Do you sell coffee?", timeout=30_000)
        page.page.locator("#review-reason textarea").fill("out of character")
        page.page.locator("#review-reject").click()
        expect(page.page.locator("#review-header")).to_contain_text("nothing waiting for review", timeout=30_000)
        page.shot("02-done")
    finally:
        context.close()

    kept = {e.id: e for e in synthetic.all_examples(folder)}
    assert (kept["s1"].status, kept["s1"].reply, kept["s1"].edited) == (
        "accepted",
        "Oh petal, a whole tray, still warm!",
        True,
    )
    assert (kept["s2"].status, kept["s2"].reason) == ("rejected", "out of character")
