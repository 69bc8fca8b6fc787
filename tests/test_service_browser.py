"""The web page in headless Chromium: pick an image, type a change, move alpha, click a hit.

Needs Debian's `chromium` and the `playwright` Python package (never `playwright install`);
skipped cleanly without them. Set CIR_SCREENSHOT=path to save a screenshot of the hits.
"""

from __future__ import annotations

import os
import shutil

import pytest

from service_fixtures import live_server, world_index  # noqa: F401 - fixtures

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def page(live_server):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            pg = browser.new_page(viewport={"width": 1280, "height": 820})
            pg.goto(live_server.url + "/")
            yield pg
        finally:
            browser.close()


def _status_after(page, action) -> str:
    """Run an action that triggers a search and wait until its answer is shown."""
    with page.expect_response(lambda r: r.url.endswith("/search")) as answer:
        action()
    assert answer.value.status == 200
    page.wait_for_function("!document.getElementById('status').textContent.includes('searching')")
    return page.locator("#status").inner_text()


def test_page_search_flow(page, world_index):
    sync_api.expect(page.locator("#info")).to_contain_text(f"{len(world_index['ids'])} images")
    sync_api.expect(page.locator("#info")).to_contain_text(  # which model serves
        f"model {os.path.basename(world_index['model'])} · no adapter")
    assert page.locator("#alpha").input_value() == "0.75"  # the manifest's default alpha
    page.fill("#text", "make it blue")
    reference = world_index["paths"][world_index["ids"][3]]
    status = _status_after(page, lambda: page.set_input_files("#file", str(reference)))
    assert "24 hits" in status and "slerp" in status
    hits = page.locator(".hit")
    assert hits.count() == 24
    sync_api.expect(page.locator("#preview")).to_be_visible()
    first_scores = page.locator(".hit .score").all_inner_texts()
    assert all(-1.0001 <= float(s) <= 1.0001 for s in first_scores)
    page.wait_for_function("[...document.querySelectorAll('.hit img')].every(i => i.complete && i.naturalWidth > 0)")
    if os.environ.get("CIR_SCREENSHOT"):
        page.screenshot(path=os.environ["CIR_SCREENSHOT"], full_page=False)

    # moving the alpha slider re-runs the search with the new text weight
    status = _status_after(page, lambda: page.locator("#alpha").fill("0.3"))
    assert "α=0.30" in status

    # clicking a hit searches from it (by gallery id, no upload)
    target = hits.nth(2).get_attribute("data-id")
    with page.expect_request(lambda r: r.url.endswith("/search")) as sent:
        _status_after(page, lambda: hits.nth(2).click())
    assert f'name="reference_id"\r\n\r\n{target}' in sent.value.post_data
    sync_api.expect(page.locator("#ref-label")).to_contain_text(target)
    page.wait_for_function("[...document.querySelectorAll('.hit img')].every(i => i.complete && i.naturalWidth > 0)")


def test_page_shows_errors(page):
    page.locator("#clear").click()
    page.fill("#text", "")
    page.locator("#search").click()
    sync_api.expect(page.locator("#error")).to_be_visible()
    sync_api.expect(page.locator("#error")).to_contain_text("Pick an image")


def test_api_docs_render_offline(page, live_server):
    """Swagger UI at /docs renders with every request outside the server refused."""
    context = page.context.browser.new_context()
    docs = context.new_page()
    outside = []

    def only_local(route):
        if route.request.url.startswith(live_server.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    docs.route("**/*", only_local)
    try:
        docs.goto(live_server.url + "/docs")
        sync_api.expect(docs.locator(".swagger-ui .info .title")).to_contain_text("CIR")
        sync_api.expect(docs.locator(".opblock-summary-path", has_text="/search").first).to_be_visible()
    finally:
        context.close()
    assert outside == []
