"""The web page in headless Chromium: pick an image, type a change, move alpha, click a hit, filter.

Needs Debian's `chromium` and the `playwright` Python package (never `playwright install`);
skipped cleanly without them. Set CIR_SCREENSHOT=path to save a screenshot of the hits.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from filter_fixtures import matches
from service_fixtures import (HOSTILE_FIELD, LiveServer, live_server, rich_index, rich_server,  # noqa: F401
                              server_settings, world_index)

from cir.feedback import read_events

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def page(browser, live_server):
    pg = browser.new_page(viewport={"width": 1280, "height": 820})
    pg.goto(live_server.url + "/")
    yield pg
    pg.close()


def _status_after(page, action) -> str:
    """Run an action that triggers a search and wait until its answer is shown."""
    with page.expect_response(lambda r: r.url.endswith("/search")) as answer:
        action()
    assert answer.value.status == 200
    page.wait_for_function("!document.getElementById('status').textContent.includes('searching')")
    return page.locator("#status").inner_text()


def test_page_first_screen_shows_products_before_any_search(page, world_index):
    """Before any query the page shows gallery items (random, or newest) with their display fields."""
    sync_api.expect(page.locator("#status")).to_contain_text("random items of")
    hits = page.locator(".hit")
    assert hits.count() == 24 and page.locator(".hit .score").count() == 0  # items, not ranked hits
    first = hits.nth(0).get_attribute("data-id")
    gallery = {json.loads(line)["cirr_name"]: json.loads(line)["attributes"]
               for line in open(world_index["world"] / "gallery.jsonl")}
    shown = hits.nth(0).locator(".field").all_inner_texts()
    attrs = gallery[first]  # the world's fields, in the index's (sorted) order: the first three are shown
    assert shown == [attrs["colour"], f"pattern: {attrs['pattern']}", f"position: {attrs['position']}"]
    with page.expect_response(lambda r: "/browse" in r.url and "newest" in r.url):
        page.locator("#newest").click()
    sync_api.expect(page.locator("#status")).to_contain_text("newest items of")
    assert hits.nth(0).get_attribute("data-id") == world_index["ids"][-1]


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
    sync_api.expect(page.locator(".ref img")).to_be_visible()
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


def _answer_after(page, action) -> dict:
    """Run an action that triggers a search; the JSON answer once the page shows it.

    Chromium does not expose multipart bodies with files to Playwright, so what was sent is
    read back from the answer (`references`, `negative_weight`)."""
    with page.expect_response(lambda r: r.url.endswith("/search")) as answer:
        action()
    assert answer.value.status == 200
    page.wait_for_function("!document.getElementById('status').textContent.includes('searching')")
    return answer.value.json()


def test_page_several_references_and_a_negative_text(page, world_index):
    """Drop two images (two thumbnails, both sent), remove one, add a 'not' text with its weight."""
    page.locator("#clear").click()
    page.fill("#text", "make it blue")
    paths = [str(world_index["paths"][world_index["ids"][i]]) for i in (5, 6)]
    body = _answer_after(page, lambda: page.set_input_files("#file", paths))
    assert body["references"] == 2 and body["negative_weight"] is None
    sync_api.expect(page.locator(".ref")).to_have_count(2)
    sync_api.expect(page.locator("#ref-label")).to_contain_text("2 references")
    sync_api.expect(page.locator("#status")).to_contain_text("2 references")

    body = _answer_after(page, lambda: page.locator(".ref .remove").first.click())
    assert body["references"] == 1
    sync_api.expect(page.locator(".ref")).to_have_count(1)
    sync_api.expect(page.locator("#ref-label")).to_have_text(f"upload: {Path(paths[1]).name}")

    page.locator("#negative-weight").fill("0.5")  # no negative text yet: no search
    page.fill("#negative", "red")
    body = _answer_after(page, lambda: page.locator("#search").click())
    assert body["negative_weight"] == 0.5 and body["references"] == 1
    sync_api.expect(page.locator("#status")).to_contain_text("not β=0.50")

    # shift-click on a hit adds it as a second (gallery) reference; a weight per thumbnail
    target = page.locator(".hit").nth(1).get_attribute("data-id")
    body = _answer_after(page, lambda: page.locator(".hit").nth(1).click(modifiers=["Shift"]))
    assert body["references"] == 2
    sync_api.expect(page.locator(".ref")).to_have_count(2)
    sync_api.expect(page.locator(".ref").nth(1)).to_have_attribute("title", f"gallery: {target}")
    body = _answer_after(page, lambda: page.locator(".ref input").nth(1).fill("3") or
                         page.locator(".ref input").nth(1).dispatch_event("change"))
    assert body["references"] == 2
    page.fill("#negative", "")
    page.locator("#clear").click()
    sync_api.expect(page.locator(".ref")).to_have_count(0)


def test_page_shows_errors(page):
    if page.locator("#clear").is_visible():
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


def _filter_sent(page, action) -> dict | None:
    """Run an action that triggers a search; return the filter the page sent (None if none)."""
    with page.expect_request(lambda r: r.url.endswith("/search")) as sent:
        _status_after(page, action)
    body = sent.value.post_data
    if 'name="filter"' not in body:
        return None
    return json.loads(body.split('name="filter"\r\n\r\n', 1)[1].split("\r\n", 1)[0])


def _hit_metadata(page) -> list[dict]:
    titles = page.locator(".hit").evaluate_all("els => els.map(e => e.title)")
    return [json.loads(t.split("\n", 1)[1]) for t in titles]


def test_page_filters_from_facets(page, world_index):
    sync_api.expect(page.locator("#filters")).to_be_visible()
    fields = page.locator("#filter-fields label").evaluate_all("els => els.map(e => e.dataset.field)")
    assert sorted(fields) == ["colour", "pattern", "position", "shape", "size"]
    page.fill("#text", "a star")
    colour = page.locator('#filter-fields label[data-field="colour"] select')
    assert _filter_sent(page, lambda: colour.select_option("blue")) == {"colour": "blue"}
    metas = _hit_metadata(page)
    blue = sum(1 for line in open(world_index["world"] / "gallery.jsonl") if '"colour": "blue"' in line)
    assert len(metas) == min(24, blue) and all(m["colour"] == "blue" for m in metas)
    size = page.locator('#filter-fields label[data-field="size"] select')
    assert _filter_sent(page, lambda: size.select_option("small")) == {"colour": "blue", "size": "small"}
    assert all(m["colour"] == "blue" and m["size"] == "small" for m in _hit_metadata(page))
    assert _filter_sent(page, lambda: page.locator("#clear-filters").click()) is None
    assert page.locator(".hit").count() == 24


@pytest.fixture(scope="module")
def rich_page(browser, rich_server):
    pg = browser.new_page(viewport={"width": 1280, "height": 1400})
    pg.goto(rich_server.url + "/")
    yield pg
    pg.close()


def test_page_number_date_and_tag_filters(rich_page, rich_index):
    page = rich_page
    sync_api.expect(page.locator("#filters")).to_be_visible()
    labels = page.locator("#filter-fields label")
    types = dict(labels.evaluate_all("els => els.map(e => [e.dataset.field, e.dataset.type])"))
    assert types == {"added": "date", "brand": "string", "colour": "string", "in_stock": "boolean",
                     "price": "number", "tags": "tags", HOSTILE_FIELD: "string"}  # the object field has none

    def control(field: str, tag: str = "select"):
        return labels.nth(list(types).index(field)).locator(tag)

    price, added = control("price", "input"), control("added", "input")
    assert price.nth(0).get_attribute("type") == "number" and price.nth(0).get_attribute("placeholder") == "min 5"
    assert added.nth(0).get_attribute("type") == "date"
    page.fill("#text", "a shape")
    _status_after(page, lambda: page.select_option("#k", "96"))  # a query with browsed items shown: searched
    assert _filter_sent(page, lambda: price.nth(0).fill("10")) == {"price": {"gte": 10}}
    assert _filter_sent(page, lambda: price.nth(1).fill("60")) == {"price": {"gte": 10, "lte": 60}}
    assert all(10 <= m["price"] <= 60 for m in _hit_metadata(page))
    flt = _filter_sent(page, lambda: added.nth(0).fill("2024-03-01"))
    assert flt == {"price": {"gte": 10, "lte": 60}, "added": {"gte": "2024-03-01"}}
    flt = _filter_sent(page, lambda: control("tags").select_option(["sale", "eco"]))
    assert flt["tags"] == {"any": ["sale", "eco"]} or flt["tags"] == {"any": ["eco", "sale"]}
    flt = _filter_sent(page, lambda: control(HOSTILE_FIELD).select_option("yes"))
    assert flt[HOSTILE_FIELD] == "yes"
    want = [i for i, m in rich_index["metadata"].items() if matches(m, flt)]
    assert want and sorted(page.locator(".hit").evaluate_all("els => els.map(e => e.dataset.id)")) == sorted(want)
    flt = _filter_sent(page, lambda: control("in_stock").select_option("true"))
    assert flt["in_stock"] is True and all(m["in_stock"] for m in _hit_metadata(page))


def test_page_info_line_follows_a_background_job(browser, rich_index, tmp_path):
    """The demo's TAT run: the info line shows its step, then the adapter (here: none) once it is over."""
    status = tmp_path / "status.json"
    status.write_text(json.dumps({"message": "TAT training: step 40 of 150 (the base model serves meanwhile)"}))
    settings = server_settings(rich_index["root"], display_fields="brand,price", status_file=status)
    with LiveServer(settings) as server:
        pg = browser.new_page(viewport={"width": 1280, "height": 820})
        try:
            pg.goto(server.url + "/")
            sync_api.expect(pg.locator("#info")).to_contain_text("TAT training: step 40 of 150")
            sync_api.expect(pg.locator("#status")).to_contain_text("random items of")
            card = pg.locator(".hit").nth(0)
            meta = rich_index["metadata"][card.get_attribute("data-id")]
            want = ([meta["brand"]] if "brand" in meta else []) + ([f"price: {meta['price']}"] if "price" in meta else [])
            assert card.locator(".field").all_inner_texts() == want
            status.unlink()  # the job is over: the next poll shows the served model's adapter
            sync_api.expect(pg.locator("#info")).to_contain_text("no adapter", timeout=15000)
        finally:
            pg.close()


def test_page_reports_a_clicked_hit_as_feedback(browser, world_index, tmp_path):  # noqa: F811
    """With --feedback-dir, a click on a hit of a logged search reaches the feedback log as a click."""
    feedback = tmp_path / "feedback"
    with LiveServer(server_settings(world_index["root"], feedback_dir=feedback)) as server:
        pg = browser.new_page(viewport={"width": 1280, "height": 820})
        try:
            pg.goto(server.url + "/")
            sync_api.expect(pg.locator("#status")).to_contain_text("random items of")
            pg.fill("#text", "make it blue")
            with pg.expect_response(lambda r: r.url.endswith("/search")) as answer:
                pg.locator("#search").click()
            query_id = answer.value.json()["query_id"]
            pg.wait_for_function("!document.getElementById('status').textContent.includes('searching')")
            target = pg.locator(".hit").nth(1).get_attribute("data-id")
            with pg.expect_response(lambda r: r.url.endswith("/feedback")) as sent:
                pg.locator(".hit").nth(1).click()
            assert sent.value.status == 200, sent.value.text()
            clicks = [e for e in read_events(feedback) if e["event"] == "feedback"]
            assert [(e["query_id"], e["item_id"], e["kind"]) for e in clicks] == [(query_id, target, "click")]
        finally:
            pg.close()
