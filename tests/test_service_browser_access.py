"""The web page against a server with a read key and two galleries: the key field, blob images, the picker."""

from __future__ import annotations

import pytest

from service_fixtures import LiveServer, rich_index, server_settings, world_index  # noqa: F401 - fixtures
from test_service_browser import ARGS, CHROMIUM, sync_api

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
READ = "page-read-key"


@pytest.fixture(scope="module")
def server(world_index, rich_index):
    settings = server_settings(world_index["root"], read_api_key=READ, collections={"rich": rich_index["root"]})
    with LiveServer(settings) as live:
        yield live


def test_key_field_blob_images_and_gallery_picker(server, world_index, rich_index):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 820})
            page.goto(server.url + "/")
            sync_api.expect(page.locator("#info")).to_contain_text("needs an API key")
            page.fill("#api-key", READ)
            page.locator("#api-key").dispatch_event("change")
            sync_api.expect(page.locator("#info")).to_contain_text(f"{len(world_index['ids'])} images")
            assert page.evaluate("localStorage.getItem('cir-api-key')") == READ
            page.fill("#text", "a red star")
            with page.expect_response(lambda r: r.url.endswith("/search")) as answer:
                page.click("#search")
            assert answer.value.status == 200 and answer.value.request.headers["x-api-key"] == READ
            page.wait_for_function("document.querySelectorAll('.hit img').length > 0 && [...document.querySelectorAll("
                                   "'.hit img')].every(i => i.src.startsWith('blob:') && i.naturalWidth > 0)")

            sync_api.expect(page.locator("#collection")).to_be_visible()
            page.select_option("#collection", "rich")
            sync_api.expect(page.locator("#info")).to_contain_text(f"{len(rich_index['ids'])} images")
            with page.expect_response(lambda r: r.url.endswith("/search")) as answer:
                page.click("#search")
            assert answer.value.url.endswith("/collections/rich/search") and answer.value.status == 200
            page.wait_for_function("document.querySelectorAll('.hit').length > 0")
            shown = page.locator(".hit").evaluate_all("cards => cards.map(c => c.dataset.id)")
            assert set(shown) <= set(rich_index["ids"])
        finally:
            browser.close()
