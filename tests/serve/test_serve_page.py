"""The search page in a real headless chromium (Playwright) against uvicorn on 127.0.0.1:
search by text and by an uploaded image, and see thumbnails that loaded, with scores.

With OMNIFUSE_SCREENSHOT=PATH the page with results is also saved there as a PNG
(benchmarks/screenshot_search.py does it for docs/images/search_page.png)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from omnifuse.serve import create_app
from omnifuse.serve.background import serving

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not CHROMIUM.is_file() and shutil.which("chromium") is None:
    pytest.skip(f"no chromium at {CHROMIUM} (make test installs Debian's)", allow_module_level=True)


def launch(playwright):
    executable = CHROMIUM if CHROMIUM.is_file() else Path(shutil.which("chromium") or "")
    return playwright.chromium.launch(executable_path=str(executable), headless=True, args=FLAGS)


def shown_hits(page, k: int) -> list[dict]:
    """Wait for k result cards whose images have loaded; each card's id, score and image
    width."""
    page.wait_for_function(
        "k => document.querySelectorAll('.hit').length === k && "
        "[...document.querySelectorAll('.hit img')].every(i => i.complete && i.naturalWidth > 0)",
        arg=k,
        timeout=20_000,
    )
    return page.eval_on_selector_all(
        ".hit",
        "cards => cards.map(c => ({text: c.querySelector('.top').innerText, "
        "score: c.querySelector('.score').innerText, "
        "width: c.querySelector('img').naturalWidth}))",
    )


def test_search_page_by_text_and_by_image(aligned_model, image_index, collection):
    row = pq.read_table(collection).slice(2, 1).to_pylist()[0]
    image = collection.parent / row["image"]
    with (
        serving(create_app(aligned_model, image_index)) as url,
        playwright_api.sync_playwright() as p,
    ):
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url + "/")
        page.wait_for_function("document.querySelector('#filter-column').options.length > 0")
        page.select_option("#k", "5")
        page.fill("#q", "a small green triangle and a blue circle")
        page.click("#go")
        hits = shown_hits(page, 5)
        assert all(h["width"] > 0 for h in hits)
        assert all(float(h["score"]) <= 1.0001 for h in hits)
        assert "5 results" in page.inner_text("#status")

        page.set_input_files("#file", str(image))
        page.wait_for_function(
            f"document.querySelector('#status').innerText.includes('results for “{image.name}”')"
        )
        hits = shown_hits(page, 5)
        assert hits[0]["text"].startswith(f"#1 {row['id']}")  # the image finds itself first
        assert all(h["score"] for h in hits)
        if os.environ.get("OMNIFUSE_SCREENSHOT"):
            page.screenshot(path=os.environ["OMNIFUSE_SCREENSHOT"], full_page=False)
        page.set_input_files(
            "#file", {"name": "fake.png", "mimeType": "image/png", "buffer": b"nope"}
        )
        page.wait_for_function("document.querySelector('#status').className === 'error'")
        assert "415" in page.inner_text("#status")
        browser.close()
    assert errors == []


def test_the_api_docs_render_offline(aligned_model, image_index):
    """/docs draws Swagger UI from the installed bundle: no request leaves 127.0.0.1."""
    with (
        serving(create_app(aligned_model, image_index)) as url,
        playwright_api.sync_playwright() as p,
    ):
        browser = launch(p)
        page = browser.new_page()
        elsewhere: list[str] = []
        page.on("request", lambda r: None if r.url.startswith(url) else elsewhere.append(r.url))
        page.goto(url + "/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=20_000)
        paths = page.eval_on_selector_all(".opblock-summary-path", "e => e.map(x => x.innerText)")
        browser.close()
    assert "/search" in paths and "/predict" in paths
    assert elsewhere == []
