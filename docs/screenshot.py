"""The review page's screenshot, ``docs/review-page.png`` (on ``docs/review.md``), taken with the tests' Chromium.

    .venv/bin/python -m docs.screenshot      # about a minute and a half on two cores

It runs ``guardrail demo --review-later`` (the reference model on corrupted easy-VQA) in a temporary folder, serves
the escalations it left pending with ``guardrail escalations serve``, opens the first one in headless Chromium and
saves the page, reduced to a small palette PNG.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from tests.support.browser import ROOT, click_through, headless_chromium, images_loaded, review_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "review-page.png")
    parser.add_argument("-n", type=int, default=400, help="demo questions (the default policy escalates about 1 %%)")
    parser.add_argument("--width", type=int, default=1100)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        demo = Path(folder) / "demo"
        environment = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        command = [sys.executable, "-m", "guardrail.cli", "demo", "--review-later", "-n", str(args.n), "--out"]
        subprocess.run([*command, str(demo)], check=True, env=environment, stdout=subprocess.DEVNULL)
        with (
            headless_chromium(width=args.width, height=800) as browser,
            review_server(demo / "checkpoints.sqlite") as url,
        ):
            browser.get(url)
            click_through(browser, browser.find_element("css selector", "a.open"))
            if not all(width > 0 for width in images_loaded(browser, "img.image")):
                raise SystemExit("the escalation's image did not load")
            height = browser.execute_script("return document.documentElement.scrollHeight")
            browser.set_window_size(args.width, int(height) + 100)  # the outer window: leave room for its frame
            raw = Path(folder) / "page.png"
            browser.save_screenshot(str(raw))
        with Image.open(raw) as page:
            page.convert("RGB").quantize(colors=128, method=Image.Quantize.FASTOCTREE).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
