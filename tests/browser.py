"""Headless Chromium for the browser tests (Debian's /usr/bin/chromium and /usr/bin/chromedriver, via selenium).

Every wait is bounded, so a test that goes wrong fails within seconds instead of hanging the suite.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--window-size=1280,1000", "--autoplay-policy=no-user-gesture-required",
)  # fmt: skip
WAIT = 20  # seconds, the longest any one step may take


def chromium_or_skip():
    """A started `webdriver.Chrome` with a fresh profile (and the profile folder), or skip the test when Debian's
    Chromium is missing outside CI (.ci/run installs it)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        missing = f"no {CHROMIUM} / {CHROMEDRIVER}: apt-get install -y chromium chromium-driver"
        if os.environ.get("CI"):  # .ci/run installs them: in CI a missing browser is a failure, never a skip
            pytest.fail(missing)
        pytest.skip(missing)
    profile = tempfile.mkdtemp(prefix="flash-vstream-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    return driver, profile


def remove_profile(profile: str) -> None:
    shutil.rmtree(profile, ignore_errors=True)


class Page:
    """One browser tab on the app, with the page's elements by their `elem_id`."""

    def __init__(self, driver, url: str):
        from selenium.webdriver.common.by import By

        self.driver, self.by = driver, By
        driver.switch_to.new_window("tab")
        self.handle = driver.current_window_handle
        driver.get(url)
        self.wait(lambda: self.find("#play-builtin"), "the page to load")

    def find(self, css: str):
        found = self.driver.find_elements(self.by.CSS_SELECTOR, css)
        return found[0] if found else None

    def wait(self, condition, what: str, timeout: float = WAIT):
        from selenium.webdriver.support.ui import WebDriverWait

        self.focus()
        return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
            lambda _: condition(), message=f"waiting {timeout} s for {what}"
        )

    def focus(self) -> None:
        if self.driver.current_window_handle != self.handle:
            self.driver.switch_to.window(self.handle)

    def text(self, css: str) -> str:
        element = self.find(css)
        return "" if element is None else element.text

    def status(self) -> str:
        self.focus()
        box = self.find("#status textarea")
        return "" if box is None else box.get_attribute("value")

    def frames(self) -> int:
        line = self.status()
        return int(line.split("frames=")[1].split()[0]) if "frames=" in line else 0

    def click(self, css: str) -> None:
        self.focus()
        self.find(css).click()

    def tab(self, label: str) -> None:
        """Open one of the source tabs by its label."""
        self.focus()
        for button in self.driver.find_elements(self.by.CSS_SELECTOR, "button[role='tab']"):
            if button.text.strip() == label:
                button.click()
                return
        raise AssertionError(f"no tab {label!r}")

    def type(self, css: str, text: str) -> None:
        self.focus()
        box = self.find(f"{css} textarea") or self.find(f"{css} input")
        box.clear()
        box.send_keys(text)

    def ask(self, question: str) -> None:
        self.type("#question", question + "\n")

    def answers(self) -> str:
        return self.text("#chat")

    def play_builtin(self, frames: int = 2) -> None:
        self.click("#play-builtin")
        self.wait(lambda: self.frames() >= frames, f"{frames} frames in memory")

    def video_state(self) -> dict | None:
        self.focus()
        return self.driver.execute_script(
            "const v = document.querySelector('#player video');"
            "return v ? {time: v.currentTime, paused: v.paused, ready: v.readyState, src: v.currentSrc} : null;"
        )

    def close(self) -> None:
        self.focus()
        self.driver.close()
        others = self.driver.window_handles
        if others:
            self.driver.switch_to.window(others[0])
