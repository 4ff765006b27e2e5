"""Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by Selenium, for the console's tests and
its screenshot script: the system browser, nothing downloaded."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Callable, Iterator

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1366, 900)
"""A laptop screen."""


def installed_browser() -> str | None:
    """The system Chromium, when it and its driver are installed (``apt-get install chromium chromium-driver``)."""
    found = next((path for path in CHROMIUM if Path(path).exists()), None)
    return found if found and (Path(CHROMEDRIVER).exists() or shutil.which("chromedriver")) else None


OFFLINE_PROXY = "http://127.0.0.1:9"
"""A proxy at a closed port: with it, a request to any host but this machine's loopback fails, as offline."""


@contextlib.contextmanager
def chromium(*, offline: bool = False) -> Iterator:
    """The system Chromium, headless, at a laptop's window size; ``offline``: it reaches nothing but loopback
    (Chromium sends loopback requests past its proxy, every other one to :data:`OFFLINE_PROXY`)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = installed_browser()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={WINDOW[0]},{WINDOW[1]}", "--lang=en-US",
                     *([f"--proxy-server={OFFLINE_PROXY}"] if offline else [])):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER if Path(CHROMEDRIVER).exists()
                                                                 else shutil.which("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, condition: Callable, timeout_s: float = 60, message: str = ""):
    """``condition(driver)``'s first truthy value within ``timeout_s`` (Selenium's wait, raising with ``message``);
    an element replaced while read (a page that polls redraws) is read again at the next try."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s, poll_frequency=0.2,
                         ignored_exceptions=(StaleElementReferenceException,)).until(condition, message)


def script_errors(driver) -> list[str]:
    """The page's JavaScript errors logged since the last call (a console page must log none). An answer with an
    error status is the browser's network log, not the page's error: the tests provoke some (a bad filter)."""
    return [entry["message"] for entry in driver.get_log("browser")
            if entry["level"] == "SEVERE" and entry.get("source") != "network"]
