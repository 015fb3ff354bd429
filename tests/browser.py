"""A real headless browser for the page's tests: Debian's chromium driven by Selenium.

Test modules mark themselves with ``needs_browser`` and open one with ``open_browser``.
Where chromium or its driver is missing the tests are skipped, except under
``ALERTD_REQUIRE_BROWSER`` (``.ci/run`` installs the browser and sets it): there a missing
browser fails the run instead of skipping its tests unseen.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
REQUIRED = bool(os.environ.get("ALERTD_REQUIRE_BROWSER"))
INSTALLED = Path(CHROMIUM).exists() and Path(DRIVER).exists()

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.wait import WebDriverWait
except ImportError:  # pragma: no cover - selenium is a test extra
    if REQUIRED:
        raise
    pytest.skip("needs selenium (pip install -e '.[test]')", allow_module_level=True)

__all__ = ["By", "Select", "WebDriver", "heading", "needs_browser", "open_browser", "wait_for"]

needs_browser = pytest.mark.skipif(
    not INSTALLED and not REQUIRED, reason="needs Debian's chromium and chromium-driver"
)

FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--window-size=390,844",  # a phone's screen
    "--disable-gpu",
    # Nothing but the page: this machine's closed network refuses the rest.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}


@contextmanager
def open_browser() -> Iterator[WebDriver]:
    """A headless chromium the size of a phone, until the block ends."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=DRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_page_load_timeout(20)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
        yield driver
    finally:
        driver.quit()


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], object]) -> None:
    """Until ``condition(driver)`` holds: a click returns before its page has loaded."""
    # An element found while the next page loads goes stale: look again.
    WebDriverWait(driver, 15, ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def heading(text: str) -> Callable[[WebDriver], bool]:
    """A condition for ``wait_for``: the page's ``h1`` says ``text``."""
    return lambda d: text in d.find_element(By.TAG_NAME, "h1").text
