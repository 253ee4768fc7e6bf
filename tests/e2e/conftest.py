"""Browser tests: Playwright driving the system's Chromium against a live test server."""

import os
from pathlib import Path

import pytest

from tests.conftest import CHROMIUM_PATH

# Playwright's sync API runs an event loop in this thread; Django's ORM calls from the test body
# are still synchronous and safe here.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-results"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM_PATH):
        pytest.skip(f"needs Chromium at {CHROMIUM_PATH}")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def _note_csp_violation(text: str, violations: list[str]) -> None:
    if "Content Security Policy" in text:
        violations.append(text)


@pytest.fixture
def new_context(browser):
    """Open isolated browser contexts (one per person); console CSP violations fail the test."""
    contexts = []
    violations: list[str] = []

    def make():
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        context.set_default_timeout(15_000)
        context.on(
            "console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None
        )
        contexts.append(context)
        return context

    yield make
    ARTIFACTS.mkdir(exist_ok=True)
    for context in contexts:
        context.close()
    assert violations == [], violations
