"""Screenshot a report page in a real browser (headless Chromium), to see what a reader sees first.

    python tools/report_screenshot.py rescore-out/report.html first-screen.png [--size 1280x800]

Renders the page's first screen at the given window size and writes it as PNG. The browser is the
first of `chromium`, `chromium-browser`, `google-chrome` on PATH (or `$CHROMIUM`); exit 3 when
there is none (tests skip then).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
NO_BROWSER = 3


def find_browser() -> str | None:
    """The Chromium-family browser to use, or None."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 800) -> Path:
    """The first `width` x `height` pixels of `page` as rendered by headless Chromium."""
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError(f"no browser found (tried {', '.join(BROWSERS)}, $CHROMIUM)")
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",  # root in containers
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--screenshot={png.resolve()}",
            page.resolve().as_uri(),
        ]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    if not png.is_file():
        raise RuntimeError(f"{browser} wrote no screenshot to {png}")
    return png


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("page", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--size", default="1280x800", help="WIDTHxHEIGHT of the window")
    args = ap.parse_args()
    width, height = (int(x) for x in args.size.split("x"))
    try:
        screenshot(args.page, args.png, width, height)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        sys.exit(NO_BROWSER)
    print(args.png)


if __name__ == "__main__":
    main()
