"""The README stays true: every environment variable the settings read is documented."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_environment_variable_is_in_the_readme():
    settings_source = (ROOT / "portal" / "settings.py").read_text()
    names = set(re.findall(r'env(?:\(\))?\.(?:str|bool|int|float|list|db)\(\s*"([A-Z_]+)"', settings_source))
    assert {"DEBUG", "SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL"} <= names
    readme = (ROOT / "README.md").read_text()
    missing = sorted(name for name in names if f"`{name}`" not in readme)
    assert missing == []


def test_readme_first_screen_has_the_two_commands_and_the_screenshot():
    first_screen = (ROOT / "README.md").read_text()[:1500]
    assert "make run" in first_screen
    assert "make test" in first_screen
    assert "docs/screenshot.png" in first_screen
    assert (ROOT / "docs" / "screenshot.png").exists()
