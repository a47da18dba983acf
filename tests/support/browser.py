"""A real browser for the browser tests: the system's headless Chromium (Debian's ``chromium`` and
``chromium-driver``, which ``make browser`` installs), driven by Selenium; and the review page run as users run it.

Without Chromium the browser tests skip, saying how to install it, except under ``GUARDRAIL_REQUIRE_BROWSER=1``
(CI), where they fail: there the browser must be present.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import guardrail
from tests.support.processes import stop_process

ROOT = Path(guardrail.__file__).resolve().parents[1]
_URL = re.compile(r"http://127\.0\.0\.1:\d+/\?token=[\w-]+")


def chromium_paths() -> tuple[str, str]:
    """The Chromium binary and its driver; skips (or, under ``GUARDRAIL_REQUIRE_BROWSER=1``, fails) without them."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    missing = " and ".join(name for name, path in (("chromium", browser), ("chromedriver", driver)) if not path)
    message = f"{missing} not found: run `make browser` (apt-get install chromium chromium-driver)"
    if os.environ.get("GUARDRAIL_REQUIRE_BROWSER") == "1":
        pytest.fail(f"GUARDRAIL_REQUIRE_BROWSER=1 but {message}")
    pytest.skip(message)


@contextmanager
def headless_chromium(*, width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A Selenium WebDriver on the system's headless Chromium (no Selenium Manager, no network)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--no-first-run", "--disable-extensions", "--hide-scrollbars",
                     f"--window-size={width},{height}"):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.set_page_load_timeout(60)
        yield driver
    finally:
        driver.quit()


def click_through(driver: Any, element: Any) -> None:
    """Click a link or submit button and wait until the next page has loaded (a click may return before)."""
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element("tag name", "html")
    element.click()
    WebDriverWait(driver, 30).until(lambda d: _stale(old))
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")


def _stale(element: Any) -> bool:
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    return False


def images_loaded(driver: Any, selector: str = "img") -> list[int]:
    """The natural widths of the page's images matched by ``selector`` once each has finished loading (0: broken)."""
    deadline = time.monotonic() + 20
    script = "return Array.from(document.querySelectorAll(arguments[0])).map(i => i.complete)"
    while not all(driver.execute_script(script, selector)) and time.monotonic() < deadline:
        time.sleep(0.1)
    widths: list[int] = driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(i => i.naturalWidth)", selector
    )
    return widths


def console_errors(driver: Any) -> list[str]:
    """Messages the page logged at SEVERE level (failed loads, Content-Security-Policy violations)."""
    return [str(entry["message"]) for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


@contextmanager
def review_server(db: Path, *args: str) -> Iterator[str]:
    """``guardrail escalations serve --db DB ARGS`` in its own process, as a user starts it; yields the printed
    address (with the token). The process is stopped with SIGTERM afterwards."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "guardrail.cli", "escalations", "serve", "--db", str(db), *args]
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=errors, text=True)
        try:
            assert process.stdout is not None
            printed: list[str] = []
            for line in process.stdout:  # the address is printed once the socket listens
                printed.append(line)
                if (match := _URL.search(line)) is not None:
                    yield match.group(0)
                    break
            else:
                process.wait(timeout=30)
                errors.seek(0)
                raise AssertionError(f"the review server printed no address: {''.join(printed)}{errors.read()}")
        finally:
            stop_process(process)
            if process.stdout is not None:
                process.stdout.close()
