"""A real headless Chromium for the dashboard's tests, driven by selenium.

Debian's ``chromium`` and ``chromium-driver`` packages, and selenium from the
test extra. Selenium is pointed at ``/usr/bin/chromedriver`` so that it never
tries to download a driver. Without them the tests skip and say how to
install them, unless ``PYCREW_REQUIRE_BROWSER=1`` (CI), where a missing
browser fails them instead.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers.common import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
DRIVER = "/usr/bin/chromedriver"
INSTALL = (
    "apt-get install -y chromium chromium-driver (as root) and pip install selenium "
    "(the test extra)"
)
FLAGS = (
    "--headless=new",
    "--no-sandbox",  # root in CI, and containers without user namespaces
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # a loaded machine must not push the page's renderer to the back: the
    # tests watch a live page update itself
    "--disable-renderer-backgrounding",
    "--disable-background-timer-throttling",
    "--no-first-run",
    "--window-size=1400,1800",
)


def missing() -> str | None:
    """Why no browser test can run here, or None."""
    lacking = [
        what
        for what, there in (
            ("chromium", os.access(CHROMIUM, os.X_OK)),
            ("chromedriver", shutil.which(DRIVER) is not None),
            ("selenium", importlib.util.find_spec("selenium") is not None),
        )
        if not there
    ]
    if not lacking:
        return None
    return f"a real browser is needed ({', '.join(lacking)} missing): {INSTALL}"


def require_browser() -> None:
    """Skip (or, with PYCREW_REQUIRE_BROWSER=1, fail) when no browser is here."""
    why = missing()
    if why is None:
        return
    if os.environ.get("PYCREW_REQUIRE_BROWSER") == "1":
        pytest.fail(f"PYCREW_REQUIRE_BROWSER=1, but {why}")
    pytest.skip(why)


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """A headless Chromium with a fresh profile in ``profile``; quit at the end."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.set_script_timeout(30)
        yield driver
    finally:
        driver.quit()


def js(driver: Any, script: str, *args: Any) -> Any:
    """Run ``script`` (a function body) in the page and return what it returns."""
    return driver.execute_script(script, *args)


def wait_js(driver: Any, script: str, seconds: float, what: str) -> None:
    """Wait until ``script`` returns something true in the page; say what the page
    showed if it never does."""
    try:
        wait_until(lambda: bool(driver.execute_script(script)), seconds, what)
    except AssertionError as exc:
        seen = driver.execute_script(
            "return {live: document.getElementById('live')?.textContent,"
            " banner: document.getElementById('broken')?.textContent,"
            " tiles: [...document.querySelectorAll('#tiles .value')].map((e) => e.textContent)}"
        )
        raise AssertionError(
            f"{exc}; the page showed {seen}, console {console_errors(driver)}"
        ) from None


def console_errors(driver: Any) -> list[str]:
    """The page's console errors so far (a refused script, an exception)."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
