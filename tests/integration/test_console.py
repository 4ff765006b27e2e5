"""The console in a real browser (headless Chromium driven by Selenium) against a running service: every page,
a search in the playground, a re-embedding followed to its swap on the Jobs page, and API keys (only a prompt
without one; a read-only key sees no write or admin buttons)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import SAMPLE_FIELDS
from tests.integration.console_browser import chromium, installed_browser, script_errors, wait_for
from tests.integration.test_reembed import DOCUMENTS, make_alias
from tests.integration.test_scoped_keys import OPS, READER, scoped_service  # noqa: F401 (a fixture, used below)

pytestmark = pytest.mark.skipif(installed_browser() is None,
                                reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
                                       "chromium-driver; .ci/run installs them)")



SCREENSHOTS = os.environ.get("RAYPRISM_CONSOLE_SCREENSHOTS")
"""A folder (docs/console) to save the Jobs page's screenshot in; the others: scripts/console_screenshots.py."""


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:
        yield driver


def css(driver, selector: str):
    return driver.find_elements("css selector", selector)


def texts(driver, selector: str) -> list[str]:
    return [element.text for element in css(driver, selector)]


def open_page(driver, url: str, page: str, ready: str, timeout_s: float = 60):
    """Open ``#/page`` of the console at ``url`` and wait until ``ready`` (a CSS selector) is on it."""
    driver.get(f"{url}/console/#/{page}")
    wait_for(driver, lambda d: css(d, ready), timeout_s, f"{page}: no {ready}")
    assert script_errors(driver) == []


@pytest.fixture(scope="module")
def console_service(service_url):
    """The session's service with an alias ``console_live`` → ``console_v1`` (24 Debian documents, embedded by clip,
    whose text tower is a tiny random CLIP's): the Jobs page moves it to minilm."""
    make_alias(service_url, "console_live", "console_v1", "clip", DOCUMENTS[:24])
    return service_url


def search(url: str, collection: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}/v1/collections/{collection}/search", json=body, timeout=120)


@pytest.mark.slow
def test_each_page_shows_the_services_own_answers_and_a_search_finds_its_hits(console_service, browser):
    url = console_service
    open_page(browser, url, "collections", "a[href='#/collections/console_v1']")
    row = css(browser, "a[href='#/collections/console_v1']")[0].find_element("xpath", "./ancestor::tr")
    cells = [cell.text for cell in row.find_elements("css selector", "td")]
    assert cells[:3] == ["console_v1", "24", "clip"] and cells[3].split() == ["dense", "bm25"], cells
    assert (cells[4], cells[5]) == ("—", "console_live"), cells

    open_page(browser, url, "collections/console_v1", "table[aria-label='Documents'] tbody tr")
    shown = texts(browser, "table[aria-label='Documents'] tbody tr td:first-child")
    stored = sorted(document["id"] for document in DOCUMENTS[:24])
    assert shown == stored[:20] and css(browser, "#docs-range")[0].text == "1–20 of 24"
    assert not css(browser, "#docs-first")[0].is_enabled() and not css(browser, "#docs-previous")[0].is_enabled()
    css(browser, "#docs-next")[0].click()  # the next page, asked after the last id shown
    wait_for(browser, lambda d: css(d, "#docs-range") and css(d, "#docs-range")[0].text == "21–24 of 24")
    assert texts(browser, "table[aria-label='Documents'] tbody tr td:first-child") == stored[20:]
    assert f"after={stored[19]}" in browser.current_url and not css(browser, "#docs-next")[0].is_enabled()
    css(browser, "#docs-previous")[0].click()
    wait_for(browser, lambda d: css(d, "#docs-range") and css(d, "#docs-range")[0].text == "1–20 of 24")
    assert texts(browser, "table[aria-label='Documents'] tbody tr td:first-child") == stored[:20]
    css(browser, "table[aria-label='Documents'] tbody tr button")[0].click()
    wait_for(browser, lambda d: css(d, ".doc-text"))
    first = httpx.get(f"{url}/v1/collections/console_v1/documents/{stored[0]}", timeout=60).json()
    assert css(browser, ".doc-text")[0].text.split() == first["text"].split()
    assert css(browser, "button.danger")  # no keys on this service: every button

    query = "a library for parsing XML"
    open_page(browser, url, "search?collection=console_v1&q=" + query.replace(" ", "%20"), "ol.hits li")
    expected = search(url, "console_v1", {"query": query, "k": 10, "fusion": {"type": "weighted",
                                                                                "weights": {"dense": 0.5, "sparse": 0.5}}})
    assert [item.get_attribute("data-id") for item in css(browser, "ol.hits li")] == [
        str(hit["id"]) for hit in expected.json()["results"]]
    assert "client.search(\"console_v1\", \"a library for parsing XML\"" in css(browser, "pre.python")[0].text
    assert css(browser, "pre.curl")[0].text.startswith(f"curl -s {url}/v1/collections/console_v1/search")

    # the service's own filter error, shown at the filter; then two settings compared, differences marked
    css(browser, "#filter-a")[0].send_keys("no_such_field == 1")
    css(browser, "#run-search")[0].click()
    wait_for(browser, lambda d: css(d, "#filter-error-a")[0].text)
    refused = search(url, "console_v1", {"query": query, "filter": "no_such_field == 1"}).json()["error"]["message"]
    assert css(browser, "#filter-error-a")[0].text == refused
    css(browser, "#filter-a")[0].clear()
    css(browser, "#compare")[0].click()
    css(browser, "#run-search")[0].click()
    wait_for(browser, lambda d: len(css(d, "ol.hits")) == 2 and not css(d, "#filter-error-a")[0].text)
    dense = search(url, "console_v1", {"query": query, "k": 10, "mode": "dense"}).json()["results"]
    assert [item.get_attribute("data-id") for item in css(browser, "ol.hits")[1].find_elements("css selector", "li")] == [
        str(hit["id"]) for hit in dense]
    hybrid_ids = {str(hit["id"]) for hit in expected.json()["results"]}
    only_dense = [str(hit["id"]) for hit in dense if str(hit["id"]) not in hybrid_ids]
    marked = [item.get_attribute("data-id") for item in css(browser, "ol.hits")[1].find_elements("css selector", "li.only")]
    assert marked == only_dense

    open_page(browser, url, "models", "article h2")
    assert {"minilm", "judge", "clip"} <= set(texts(browser, "article h2"))
    wait_for(browser, lambda d: len(css(d, "svg.chart")) >= 3, 30, "no charts from /metrics")

    open_page(browser, url, "map?collection=console_v1&color_by=section&q=xml", "circle.hit")
    assert len(css(browser, "circle.point")) == 24
    placed = httpx.get(f"{url}/v1/collections/console_v1/map", params={"color_by": "section", "query": "xml"},
                       timeout=120).json()["query"]["hits"]
    assert [hit.get_attribute("data-hit") for hit in css(browser, "circle.hit")] == [str(hit["id"]) for hit in placed]
    assert css(browser, "#map-query-point")
    assert script_errors(browser) == []


@pytest.mark.slow
def test_a_chunked_documents_pieces_show_as_stored(console_service, browser):
    url = console_service
    spec = {"name": "console_pages", "model": "minilm", "chunking": {"max_tokens": 32, "overlap_tokens": 4}}
    assert httpx.post(f"{url}/v1/collections", json=spec, timeout=60).status_code == 201
    text = "\n\n".join(f"Section {i}. " + " ".join(f"word{i}x{j}" for j in range(40)) for i in range(4))
    written = httpx.post(f"{url}/v1/collections/console_pages/documents",
                         json={"documents": [{"id": "guide.md", "text": text}]}, timeout=120)
    assert written.status_code == 200, written.text
    try:
        open_page(browser, url, "collections/console_pages", "table[aria-label='Documents'] tbody tr button")
        css(browser, "table[aria-label='Documents'] tbody tr button")[0].click()
        wait_for(browser, lambda d: css(d, "ol.pieces li"))
        stored = httpx.get(f"{url}/v1/collections/console_pages/documents/guide.md", params={"pieces": "true"},
                           timeout=60).json()["pieces"]
        assert len(stored) > 1 and [piece["index"] for piece in stored] == list(range(len(stored)))
        shown = css(browser, "ol.pieces li")
        assert [item.get_attribute("data-piece") for item in shown] == [str(piece["index"]) for piece in stored]
        assert [item.text.split(": ", 1)[1].split() for item in shown] == [piece["text"].split() for piece in stored]
        assert css(browser, ".doc-text")[0].text.split() == text.split()
        assert script_errors(browser) == []
    finally:
        httpx.delete(f"{url}/v1/collections/console_pages", timeout=60)


@pytest.mark.slow
def test_the_jobs_page_starts_a_reembedding_and_follows_it_to_its_swap(console_service, browser):
    url = console_service
    open_page(browser, url, "jobs?alias=console_live", "#start-reembed")
    from selenium.webdriver.support.ui import Select

    Select(css(browser, "#reembed-model")[0]).select_by_value("minilm")
    css(browser, "#reembed-min-score")[0].send_keys("0")
    css(browser, "#start-reembed")[0].click()
    row = "tr[data-job='console_live-1']"
    wait_for(browser, lambda d: css(d, row))
    wait_for(browser, lambda d: "done" in css(d, row + " td.state")[0].text, 300, "the job did not finish")
    job = httpx.get(f"{url}/v1/reembed/console_live-1", timeout=60).json()
    assert (job["state"], job["phase"], job["documents_done"], job["source"]) == ("done", "swapped", 24, "console_v1")
    assert css(browser, row + " td.swap")[0].text == f"console_live → {job['target']}"
    assert f"{job['gate']['metric']}: new" in css(browser, row)[0].text and "passed" in css(browser, row)[0].text
    assert httpx.get(f"{url}/v1/collections/console_live", timeout=60).json()["name"] == job["target"]
    assert script_errors(browser) == []
    if SCREENSHOTS:
        browser.save_screenshot(str(Path(SCREENSHOTS) / "jobs.png"))


def enter_key(driver, key: str) -> None:
    field = wait_for(driver, lambda d: css(d, "#api-key"))[0]
    field.clear()
    field.send_keys(key)
    css(driver, "form.keybox button[type=submit]")[0].click()


@pytest.mark.slow
def test_with_keys_the_console_asks_for_one_and_a_read_only_key_sees_no_write_or_admin_buttons(
        scoped_service, browser):  # noqa: F811 (the fixture imported above)
    url, _, _ = scoped_service  # keys: search-ui (read:*), team-a, ops (admin)
    admin = {"Authorization": f"Bearer {OPS}"}
    assert httpx.post(f"{url}/v1/collections", headers=admin, timeout=120, json={
        "name": "kept_v1", "model": "tiny", "fields": SAMPLE_FIELDS}).status_code == 201
    assert httpx.post(f"{url}/v1/collections/kept_v1/documents", headers=admin, timeout=120,
                      json={"documents": DOCUMENTS[:5]}).status_code == 200
    assert httpx.post(f"{url}/v1/aliases", headers=admin, json={"name": "kept", "collection": "kept_v1"},
                      timeout=60).status_code == 201

    for page in ("collections/kept_v1", "search?collection=kept_v1&q=library", "models", "jobs?alias=kept",
                 "map?collection=kept_v1", "collections"):  # any page, without a key: only the prompt
        browser.get(f"{url}/console/#/{page}")
        browser.refresh()
        wait_for(browser, lambda d: css(d, "#api-key"))
        assert not browser.find_element("id", "nav").is_displayed(), page
        assert texts(browser, "main h1") == ["API key"], page
        assert not css(browser, "main table") and not css(browser, "main button:not([type=submit])"), page
    enter_key(browser, "sk-not-a-key-0123456789")
    wait_for(browser, lambda d: css(d, "form.keybox .error"))
    assert "That key was refused" in css(browser, "form.keybox .error")[0].text and not css(browser, "table")

    enter_key(browser, READER)
    wait_for(browser, lambda d: css(d, "a[href='#/collections/kept_v1']"))
    assert "key: search-ui (read:*)" in browser.find_element("id", "who").text
    open_page(browser, url, "collections/kept_v1", "table[aria-label='Documents'] tbody tr button")
    css(browser, "table[aria-label='Documents'] tbody tr button")[0].click()
    wait_for(browser, lambda d: css(d, ".doc-text"))
    assert not css(browser, "button.danger")  # no Delete: the key may not write
    open_page(browser, url, "jobs?alias=kept", "main h1")
    assert not css(browser, "#start-reembed") and not css(browser, "#rollback")
    assert "admin key" in browser.find_element("tag name", "main").text
    assert not css(browser, "section[aria-label='Batches']")  # no batches to cancel: the key may not embed
    open_page(browser, url, "models", "article h2")
    assert not css(browser, "#try-model") and "This key may not embed" in browser.find_element("tag name", "main").text
    open_page(browser, url, "search?collection=kept_v1&q=library", "ol.hits li")  # reading works
    open_page(browser, url, "map?collection=kept_v1", "circle.point")
    assert not css(browser, "button.danger") and script_errors(browser) == []

    css(browser, "#who button")[0].click()  # forget the key: back to the prompt
    enter_key(browser, OPS)
    wait_for(browser, lambda d: "key: ops (admin)" in d.find_element("id", "who").text)
    open_page(browser, url, "jobs?alias=kept", "#start-reembed")
    assert css(browser, "#rollback")
    open_page(browser, url, "collections/kept_v1", "table[aria-label='Documents'] tbody tr button")
    css(browser, "table[aria-label='Documents'] tbody tr button")[0].click()
    wait_for(browser, lambda d: css(d, "button.danger"))
    assert script_errors(browser) == []


NEWCOMER_QUERY = "how do I run the tests"


def ask(driver, page: str, collection: str, query: str, submit: str, answered: str) -> None:
    """Ask ``page`` (reached by the navigation) about the newcomer's query as a person would: choose ``docs`` in
    its ``collection`` select, type into its ``query`` box, press ``submit``; wait until ``answered`` shows."""
    css(driver, f"nav a[href='#/{page}']")[0].click()
    wait_for(driver, lambda d: css(d, query), 60, f"no {page} page")
    css(driver, f"{collection} option[value='docs']")[0].click()
    css(driver, query)[0].send_keys(NEWCOMER_QUERY)
    css(driver, submit)[0].click()
    wait_for(driver, lambda d: css(d, answered), 120, f"{page}: no {answered}")


def the_newcomer_path(url: str) -> None:
    """What a newcomer sees after `make run` (``url``: that service, configs/serve.yaml as shipped): the console lists
    the ``docs`` collection as the service describes it, the playground, used as a person uses it (the form, typed),
    answers "how do I run the tests" with a passage that says to run `make test`, and the map draws the collection
    with that query's hits. Offline: the browser reaches nothing but this machine, and every resource the pages
    loaded is the service's own."""
    described = httpx.get(f"{url}/v1/collections/docs", timeout=60).json()
    with chromium(offline=True) as driver:
        driver.get(f"{url}/console/")
        wait_for(driver, lambda d: css(d, "a[href='#/collections/docs']"), 120, "no docs collection listed")
        row = css(driver, "a[href='#/collections/docs']")[0].find_element("xpath", "./ancestor::tr")
        cells = [cell.text for cell in row.find_elements("css selector", "td")]
        assert cells[:3] == ["docs", str(described["count"]), described["model"]] and described["count"] > 0, cells

        ask(driver, "search", "#collection", "#query", "#run-search", "ol.hits li .passage")
        passages = [hit.text for hit in css(driver, "ol.hits li")[:3]]
        assert any("make test" in passage for passage in passages), passages

        ask(driver, "map", "#map-collection", "#map-query", "#draw-map", "circle.hit")
        points = {point.get_attribute("data-id") for point in css(driver, "circle.point")}
        hits = {hit.get_attribute("data-hit") for hit in css(driver, "circle.hit")}
        assert len(points) == described["count"] and hits and hits <= points  # every document, its hits among them
        assert script_errors(driver) == []
        loaded = driver.execute_script("return performance.getEntriesByType('resource').map((entry) => entry.name)")
        assert loaded and all(name.startswith(f"{url}/") for name in loaded), loaded
