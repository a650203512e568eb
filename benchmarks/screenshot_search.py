"""A screenshot of the search page with results, for docs/images/search_page.png.

    python benchmarks/screenshot_search.py [--out docs/images/search_page.png] [--query TEXT]

Generates a world, trains the small image-text model of benchmarks/serve_load.py on it,
indexes its images, serves them on 127.0.0.1 in a thread and searches the page by text in
headless Debian chromium (/usr/bin/chromium) through Playwright.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from serve_load import prepare

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main() -> None:
    from playwright.sync_api import sync_playwright

    from omnifuse.serve import create_app
    from omnifuse.serve.background import serving

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images/search_page.png"))
    parser.add_argument("--query", default="a large red circle")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        _, model, index = prepare(Path(scratch), args.n, args.epochs)
        with serving(create_app(model, index)) as url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=args.chromium, headless=True, args=FLAGS
            )
            page = browser.new_page(viewport={"width": 1200, "height": 820})
            page.goto(url + "/")
            page.wait_for_function("document.querySelector('#filter-column').options.length")
            page.select_option("#k", "10")
            page.fill("#q", args.query)
            page.click("#go")
            page.wait_for_function(
                "document.querySelectorAll('.hit img').length === 10 && "
                "[...document.querySelectorAll('.hit img')].every(i => i.naturalWidth > 0)"
            )
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out))
            browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
