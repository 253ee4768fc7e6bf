"""Take the README screenshot from a running `make run` (127.0.0.1:8000), signed in as a demo user.

make run            # in one terminal
make screenshot     # in another: writes docs/screenshot.png
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.support.totp_reference import time_step, totp, wait_for_next_step  # noqa: E402

BASE = os.environ.get("ACCESSGOV_URL", "http://127.0.0.1:8000")
USER = os.environ.get("SCREENSHOT_USER", "bob")
PAGE = os.environ.get("SCREENSHOT_PAGE", "/")
OUT = ROOT / "docs" / "screenshot.png"


def main() -> None:
    seed = subprocess.run(
        [sys.executable, "manage.py", "seed_demo", "--json"],
        cwd=ROOT,
        env={**os.environ, "DEBUG": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    user = next(u for u in json.loads(seed.stdout)["users"] if u["username"] == USER)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(BASE + "/accounts/login/")
        page.get_by_label("Username").fill(user["username"])
        page.get_by_label("Password").fill(user["password"])
        page.get_by_role("button", name="Continue").click()
        page.wait_for_url("**/accounts/otp/**")
        step = time_step()
        page.get_by_label("Code").fill(totp(user["totp_secret"]))
        page.get_by_role("button", name="Verify").click()
        if "/accounts/otp/" in page.url:  # that code was spent already (a recent sign-in): use the next one
            wait_for_next_step(step)
            page.get_by_label("Code").fill(totp(user["totp_secret"]))
            page.get_by_role("button", name="Verify").click()
        page.goto(BASE + PAGE)
        OUT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(OUT))
        browser.close()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
