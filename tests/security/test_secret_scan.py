"""The repository secret scan (scripts/secret_scan.py): what it catches, where, and how the allowlist
matches. The fake credentials are assembled at run time so this file itself scans clean."""

import importlib.util
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AWS_KEY = "AKIA" + "Z7Q4RT2XKJ8MPL3W"
GITHUB_TOKEN = "ghp_" + "a8Kd02LmQz" + "7XwPr4Tn6V" + "b1Yc9Ue3Hs" + "5Jf0Gi"
PRIVATE_KEY = "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIEpAIB" + "AAKCAQEA\n-----END RSA PRIVATE KEY-----\n"


@pytest.fixture(scope="module")
def secret_scan():
    spec = importlib.util.spec_from_file_location("secret_scan", ROOT / "scripts" / "secret_scan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def repo_with(tmp_path: Path, files: dict[str, str]) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    return tmp_path


def found(secret_scan, root: Path) -> set[tuple[str, str]]:
    return {(f["file"], f["type"]) for f in secret_scan.scan(secret_scan.tracked_files(root), root)}


def test_real_credential_formats_are_found_everywhere_including_tests(secret_scan, tmp_path):
    root = repo_with(
        tmp_path,
        {
            "app/settings.py": f'AWS_ACCESS_KEY_ID = "{AWS_KEY}"\n',
            "tests/test_x.py": f'TOKEN = "{GITHUB_TOKEN}"\n',
            "deploy/key.pem": PRIVATE_KEY,
        },
    )
    assert found(secret_scan, root) >= {
        ("app/settings.py", "AWS Access Key"),
        ("tests/test_x.py", "GitHub Token"),
        ("deploy/key.pem", "Private Key"),
    }


def test_a_password_in_application_code_is_found_but_a_test_fixture_password_is_not(secret_scan, tmp_path):
    line = 'db_password = "' + "Tr0ub4dor-and-3" + '"\n'
    root = repo_with(tmp_path, {"app/db.py": line, "tests/test_db.py": line})
    assert found(secret_scan, root) == {("app/db.py", "Secret Keyword")}


def test_the_allowlist_matches_by_file_detector_and_hash_not_by_line(secret_scan, tmp_path):
    root = repo_with(tmp_path, {"app/settings.py": f'AWS_ACCESS_KEY_ID = "{AWS_KEY}"\n'})
    findings = secret_scan.scan(secret_scan.tracked_files(root), root)
    allowlist = [{**f, "reason": "documented example"} for f in findings]
    (root / "app/settings.py").write_text(f'# moved down\n\nAWS_ACCESS_KEY_ID = "{AWS_KEY}"\n')
    moved = secret_scan.scan(secret_scan.tracked_files(root), root)
    assert secret_scan.unexplained(moved, allowlist) == []
    (root / "app/other.py").write_text(f'KEY = "{AWS_KEY}"\n')
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    copied = secret_scan.scan(secret_scan.tracked_files(root), root)
    assert [f["file"] for f in secret_scan.unexplained(copied, allowlist)] == ["app/other.py"]


def test_every_allowlisted_finding_says_why_it_is_not_a_secret(secret_scan):
    import json

    entries = json.loads(secret_scan.ALLOWLIST.read_text())
    assert entries, "the allowlist exists"
    for entry in entries:
        assert set(entry) == {"file", "type", "hash", "reason"}
        assert len(entry["reason"]) > 20, entry


def test_the_scan_covers_every_tracked_file_but_its_own_allowlist(secret_scan):
    """The whole repository is scanned by `make lint` (scripts/secret_scan.py), once per CI run; here,
    only that it looks at what git tracks and not at the allowlist that explains its findings."""
    files = secret_scan.tracked_files()
    assert ".secret-scan-allowlist.json" not in files and "README.md" in files
