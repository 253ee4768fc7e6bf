"""Secret scan of the repository: every file git tracks, with detect-secrets' detectors.

A finding fails the scan unless `.secret-scan-allowlist.json` lists it (file, detector, hash of the
value - never the value itself) with the reason it is not a secret. Matching ignores line numbers, so
edits elsewhere in a file do not break the scan. Test code is scanned for real credential formats
(keys, tokens, high-entropy strings) but not for the "password = ..." keyword rule, which fires on every
test fixture's dummy password.

    python scripts/secret_scan.py            # exit 0 clean, 1 with findings (printed)
    python scripts/secret_scan.py --list     # print every finding as an allowlist entry
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

from detect_secrets import SecretsCollection
from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.settings import transient_settings

ROOT = Path(__file__).resolve().parent.parent
ALLOWLIST = ROOT / ".secret-scan-allowlist.json"
# Dummy credentials are the point of these directories; the keyword rule is off there (the rest stays).
FIXTURE_DIRS = ("tests/", "bench/")
KEYWORD_DETECTOR = "KeywordDetector"


def _plugins(*, keyword: bool) -> list[dict]:
    names = sorted(cls.__name__ for cls in get_mapping_from_secret_type_to_class().values())
    return [{"name": name} for name in names if keyword or name != KEYWORD_DETECTOR]


def tracked_files(root: Path = ROOT) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    # The allowlist holds the findings' hashes (and quotes the placeholders it explains): not scanned.
    return [name for name in out.split("\0") if name and name != ALLOWLIST.name and (root / name).is_file()]


def scan(files: list[str], root: Path = ROOT) -> list[dict]:
    """Findings as {"file", "type", "hash", "line"}, sorted."""
    findings = []
    for keyword in (True, False):
        chosen = [f for f in files if f.startswith(FIXTURE_DIRS) != keyword]
        with transient_settings({"plugins_used": _plugins(keyword=keyword)}):
            collection = SecretsCollection(root=str(root))
            for name in chosen:
                collection.scan_file(name)
            for filename, secret in collection:
                findings.append(
                    {"file": filename, "type": secret.type, "hash": secret.secret_hash, "line": secret.line_number}
                )
    return sorted(findings, key=lambda f: (f["file"], f["line"], f["type"]))


def unexplained(findings: list[dict], allowlist: list[dict]) -> list[dict]:
    allowed = {(entry["file"], entry["type"], entry["hash"]) for entry in allowlist}
    return [f for f in findings if (f["file"], f["type"], f["hash"]) not in allowed]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print all findings as allowlist entries")
    args = parser.parse_args(argv)
    findings = scan(tracked_files())
    if args.list:
        print(json.dumps([{**f, "reason": "?"} for f in findings], indent=2))
        return 0
    allowlist = json.loads(ALLOWLIST.read_text())
    bad = unexplained(findings, allowlist)
    for finding in bad:
        print(f"{finding['file']}:{finding['line']}: possible secret ({finding['type']})", file=sys.stderr)
    if bad:
        print(
            f"{len(bad)} possible secret(s). Remove them (secrets come from the environment), or - if it is not "
            f"a secret - add the entry from `python scripts/secret_scan.py --list` to {ALLOWLIST.name} with a reason.",
            file=sys.stderr,
        )
        return 1
    print(f"secret scan: {len(findings)} finding(s), all explained in {ALLOWLIST.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
