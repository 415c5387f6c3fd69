"""Fixtures for the tests that open the course in a real browser (Chromium, driven by Playwright).

Playwright's own browser download needs a network, so these tests use the system's Chromium
(Debian: ``apt-get install chromium``). Without it they skip with that message, except under CI
(``CI=true``), where a missing browser fails the run instead of hiding the tests.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                  "--disable-dev-shm-usage"]
VIEWPORT = {"width": 1280, "height": 720}
INSTALL_HINT = ("the browser tests need Chromium and Playwright for Python: `sudo apt-get install chromium` "
                "(Debian/Ubuntu) and `pip install -e '.[dev]'`; the course itself does not need them")


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: a missing browser is a failure here, not a skip)", pytrace=False)
    pytest.skip(reason)


def chromium_executable() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session (the system one, never a downloaded build); Playwright
    gives it a fresh profile directory of its own."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable(f"Playwright is not installed; {INSTALL_HINT}")
    executable = chromium_executable()
    if executable is None:
        _unavailable(f"no Chromium on PATH; {INSTALL_HINT}")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True,
                                              args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.browser_call_failed = report.failed
    return report


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    """A temporary folder of its own (pytest's numbered folders are pruned as later runs start)."""
    folder = Path(tempfile.mkdtemp(prefix="rlhf-browser-screenshots-"))
    print(f"browser screenshots: {folder}")
    return folder


@pytest.fixture()
def context(browser, request, screenshot_dir):
    """A fresh browser context (cookies, storage) at 1280×720 for one test; when the test fails,
    every page still open is saved as a PNG, and its path printed."""
    ctx = browser.new_context(viewport=VIEWPORT)
    ctx.set_default_timeout(60_000)
    yield ctx
    if getattr(request.node, "browser_call_failed", False):
        for number, page in enumerate(ctx.pages):
            path = screenshot_dir / f"{request.node.name}-failed-{number}.png"
            try:
                page.screenshot(path=str(path))
                print(f"screenshot of the failure: {path}")
            except Exception as error:  # a crashed page cannot be photographed; say so and go on
                print(f"no screenshot of page {number}: {error}")
    ctx.close()


@pytest.fixture()
def screenshot(screenshot_dir, request):
    """``screenshot(page, "step")`` saves a PNG of the page and prints where, for a failing run."""

    def take(page, step: str) -> Path:
        path = screenshot_dir / f"{request.node.name}-{step}.png".replace("/", "_")
        page.screenshot(path=str(path))
        print(f"screenshot: {path}")
        return path

    return take
