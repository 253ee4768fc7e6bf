#!/usr/bin/env python3
"""Verify an AccessGov evidence pack without trusting AccessGov.

    python3 verify_evidence_pack.py PACK.zip --public-key accessgov-evidence-key.pem

Needs Python 3.11+ and the ``cryptography`` package (``pip install cryptography``); nothing else, no
network, no database. Get the public key (or its fingerprint) from the portal's Evidence page through a
channel you trust, not from the pack. Checks, and names what broke:

1. the Ed25519 signature over ``manifest.json``;
2. the SHA-256 and size of every file the manifest lists, that the ZIP holds no other file, and no name
   twice (a second copy under a signed name is what another tool may read);
3. the ledger extract: every event's hash recomputed over its content and the previous hash, the
   sequence without gaps or repeats, from the anchor hash to the period-end hash the manifest states
   (``--previous`` also checks that this pack's anchor is the previous pack's period-end hash);
4. every control test recomputed from its population file (passed / total);
5. the auditor sample re-drawn from the population files with the printed seed.

Exit status 0 when everything holds, 1 when anything broke, 2 when the pack cannot be read at all.
This file is also ``accessgov/evidence/verify.py`` (``manage.py verify_evidence_pack`` runs the same code).
"""

import argparse
import base64
import csv
import hashlib
import io
import json
import random
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field

FORMAT = "accessgov-evidence-pack/1"
MANIFEST, SIGNATURE = "manifest.json", "manifest.sig"
GENESIS = "0" * 64
# The fields every ledger event's hash covers, as AccessGov's ledger defines them (never changes).
HASHED_FIELDS = (
    "sequence",
    "occurred_at",
    "event_type",
    "actor_id",
    "actor_label",
    "client_address",
    "reason",
    "access_request_id",
    "grant_id",
    "role_id",
    "data",
)
MAX_NAMED = 20  # problems named one by one before the rest are counted


def canonical_json(content: dict) -> str:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def event_hash(content: dict, prev_hash: str) -> str:
    """The ledger's hash: SHA-256 over the previous hash, a bar, and the canonical JSON of the content."""
    return hashlib.sha256(f"{prev_hash}|{canonical_json(content)}".encode()).hexdigest()


def sample_ids(ids: list[str], seed: str, population: str, size: int) -> list[str]:
    """The auditor sample: ``random.Random("<seed>:<population>").sample(ids in file order, size)``."""
    return random.Random(f"{seed}:{population}").sample(ids, min(size, len(ids)))  # noqa: S311 (reproducible by design)


def key_fingerprint(raw_public_key: bytes) -> str:
    return "SHA256:" + hashlib.sha256(raw_public_key).hexdigest()


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    hidden: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems and not self.hidden

    def fail(self, message: str) -> None:
        if len(self.problems) < MAX_NAMED:
            self.problems.append(message)
        else:
            self.hidden += 1

    def good(self, message: str) -> None:
        self.passed.append(message)

    def lines(self) -> list[str]:
        out = [f"OK   {line}" for line in self.passed] + [f"FAIL {line}" for line in self.problems]
        if self.hidden:
            out.append(f"FAIL … and {self.hidden} more problems")
        out.append("VERIFIED: every check passed." if self.ok else "NOT VERIFIED: see FAIL lines above.")
        return out


class Unreadable(Exception):
    """The file is not an evidence pack at all (not a ZIP, no manifest)."""


def _read_member(archive: zipfile.ZipFile, name: str) -> bytes:
    try:
        return archive.read(name)
    except KeyError as exc:
        raise Unreadable(f"{name} is missing: this is not an AccessGov evidence pack") from exc


def _check_signature(report: Report, manifest_bytes: bytes, signature_text: bytes, public_pem, fingerprint) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        signature = base64.b64decode(signature_text.rstrip(b"\r\n"), validate=True)
    except ValueError:
        report.fail(f"{SIGNATURE}: not a base64 signature")
        return
    if public_pem is None:
        report.fail("no trusted public key given (--public-key FILE or --fingerprint SHA256:…): signature not checked")
        return
    try:
        key = serialization.load_pem_public_key(public_pem)
    except ValueError:
        report.fail("the public key given is not a PEM public key")
        return
    if not isinstance(key, Ed25519PublicKey):
        report.fail("the public key given is not an Ed25519 key")
        return
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if fingerprint and key_fingerprint(raw) != fingerprint:
        report.fail(f"the pack's public key is {key_fingerprint(raw)}, not the trusted fingerprint {fingerprint}")
        return
    try:
        key.verify(signature, manifest_bytes)
    except InvalidSignature:
        report.fail(f"{MANIFEST}: the signature does not verify (the manifest was edited, or signed by another key)")
        return
    report.good(f"signature: Ed25519, key {key_fingerprint(raw)}")


def _sha256_of(archive: zipfile.ZipFile, name: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with archive.open(name) as member:
        while chunk := member.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _check_names_once(report: Report, archive: zipfile.ZipFile) -> None:
    """A ZIP may hold two entries of one name: this verifier reads the last, an unzip tool may show the
    first. Either copy could be the forged one, so any repeated name fails the pack."""
    seen: dict[str, int] = {}
    for name in archive.namelist():
        seen[name] = seen.get(name, 0) + 1
    for name, times in sorted(seen.items()):
        if times > 1:
            report.fail(f"{name}: {times} entries of this name in the ZIP (one of them was added after signing)")


def _check_files(report: Report, archive: zipfile.ZipFile, manifest: dict) -> set[str]:
    """Every listed file's hash and size; returns the names whose content is as signed."""
    listed = {entry["path"]: entry for entry in manifest.get("files", [])}
    present = set(archive.namelist())
    intact = set()
    for name in sorted(present - set(listed) - {MANIFEST, SIGNATURE}):
        report.fail(f"{name}: in the ZIP but not in the manifest (added after signing)")
    for name, entry in listed.items():
        if name not in present:
            report.fail(f"{name}: listed in the manifest but missing from the ZIP")
            continue
        digest, size = _sha256_of(archive, name)
        if digest != entry.get("sha256") or size != entry.get("bytes"):
            report.fail(f"{name}: its SHA-256 is not the one in the manifest (the file was edited)")
        else:
            intact.add(name)
    if len(intact) == len(listed):
        report.good(f"files: {len(listed)} files, every SHA-256 as in the manifest, nothing added")
    return intact


def _ledger_lines(archive: zipfile.ZipFile, name: str) -> Iterator[tuple[int, bytes]]:
    with archive.open(name) as member:
        yield from enumerate(member, start=1)


def check_ledger(report: Report, archive: zipfile.ZipFile, ledger: dict) -> None:
    """Recompute the chain of the period's events from the anchor hash to the period-end hash."""
    name = ledger.get("file", "ledger/events.jsonl")
    if name not in archive.namelist():
        report.fail(f"{name}: the ledger extract is missing")
        return
    prev_hash = ledger.get("anchor_hash", GENESIS)
    expected = ledger.get("first_sequence") or 1
    count = 0
    broken = False
    for number, raw in _ledger_lines(archive, name):
        where = f"{name} line {number}"
        try:
            row = json.loads(raw)
            content = {key: row[key] for key in HASHED_FIELDS}
            stored_prev, stored_hash, sequence = row["prev_hash"], row["hash"], row["sequence"]
        except (ValueError, KeyError, TypeError):
            report.fail(f"{where}: not a ledger event (unreadable JSON or missing fields)")
            broken = True
            break
        if not isinstance(sequence, int) or sequence > expected:
            report.fail(
                f"{where}: event #{expected} is missing (deleted), or #{sequence} was inserted: the chain jumps "
                f"from #{expected - 1} to #{sequence}"
            )
            broken = True
        elif sequence < expected:
            report.fail(
                f"{where}: event #{sequence} appears twice or out of order (inserted): the chain was already at #{expected - 1}"
            )
            broken = True
        elif stored_prev != prev_hash:
            report.fail(f"{where}: event #{sequence} does not follow event #{sequence - 1} (inserted or reordered)")
            broken = True
        elif event_hash(content, prev_hash) != stored_hash:
            report.fail(f"{where}: event #{sequence} was edited: its content no longer matches its hash")
            broken = True
        if broken:
            break
        prev_hash = stored_hash
        expected += 1
        count += 1
    if broken:
        return
    if count != ledger.get("events", 0):
        report.fail(f"{name}: {count} events, the manifest says {ledger.get('events')}")
    elif prev_hash != ledger.get("period_end_hash", GENESIS):
        report.fail(f"{name}: the chain ends at {prev_hash[:16]}…, not at the manifest's period-end hash")
    else:
        last = expected - 1
        report.good(
            f"ledger: {count} events #{ledger.get('first_sequence')} to #{last} chain from the anchor "
            f"{ledger.get('anchor_hash', '')[:16]}… ({ledger.get('anchor')}) to {prev_hash[:16]}…"
        )


def _csv_rows(archive: zipfile.ZipFile, name: str) -> Iterator[dict[str, str]]:
    with archive.open(name) as member:
        yield from csv.DictReader(io.TextIOWrapper(member, encoding="utf-8-sig", newline=""))


def check_controls(report: Report, archive: zipfile.ZipFile, control_map: dict, intact: set[str]) -> None:
    """Recount every column-based control test from its population file."""
    tests = {t["id"]: t for control in control_map.get("controls", []) for t in control.get("tests", [])}
    by_file: dict[str, list[dict]] = {}
    for test in tests.values():
        if test.get("file") and test.get("column"):
            by_file.setdefault(test["file"], []).append(test)
    wrong = 0
    for name, file_tests in sorted(by_file.items()):
        if name not in archive.namelist():
            report.fail(f"{name}: needed by control tests but missing")
            continue
        counts = {t["id"]: [0, 0, 0] for t in file_tests}
        for row in _csv_rows(archive, name):
            for test in file_tests:
                value = row.get(test["column"], "")
                if value in ("true", "false"):
                    counts[test["id"]][1] += 1
                    counts[test["id"]][0] += value == "true"
                else:
                    counts[test["id"]][2] += 1
        for test in file_tests:
            passed, total, still_open = counts[test["id"]]
            if (passed, total) != (test.get("passed"), test.get("total")) or still_open != test.get("open", still_open):
                wrong += 1
                report.fail(
                    f"control test {test['id']}: {name} gives {passed} / {total}, "
                    f"the control map says {test.get('passed')} / {test.get('total')}"
                )
    if not wrong and by_file:
        report.good(f"controls: {sum(map(len, by_file.values()))} control tests recomputed from the population files")


def check_sample(report: Report, archive: zipfile.ZipFile, sample: dict) -> None:
    seed, size = sample.get("seed", ""), sample.get("size", 25)
    wrong = 0
    for population, entry in sorted(sample.get("populations", {}).items()):
        name = entry.get("file", "")
        if name not in archive.namelist():
            report.fail(f"sample of {population}: {name} is missing")
            continue
        ids = [next(iter(row.values()), "") for row in _csv_rows(archive, name)]
        if sample_ids(ids, seed, population, size) != entry.get("ids"):
            wrong += 1
            report.fail(f"sample of {population}: re-drawing with seed {seed} does not give the listed items")
    if not wrong and sample.get("populations"):
        report.good(f"sample: re-drawn with seed {seed}, {len(sample['populations'])} populations match")


def verify_pack(
    path: str,
    *,
    public_key_pem: bytes | None = None,
    fingerprint: str | None = None,
    previous: str | None = None,
) -> tuple[Report, dict]:
    """Every offline check; returns the report and the manifest (empty when unreadable)."""
    report = Report()
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise Unreadable(f"{path} is not a readable ZIP file ({exc})") from exc
    with archive:
        _check_names_once(report, archive)
        manifest_bytes = _read_member(archive, MANIFEST)
        signature_text = _read_member(archive, SIGNATURE)
        if public_key_pem is None and fingerprint and "public_key.pem" in archive.namelist():
            public_key_pem = archive.read("public_key.pem")  # trusted only if it has the given fingerprint
        _check_signature(report, manifest_bytes, signature_text, public_key_pem, fingerprint)
        try:
            manifest = json.loads(manifest_bytes)
        except ValueError:
            report.fail(f"{MANIFEST}: not JSON (edited)")
            return report, {}
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            manifest = manifest if isinstance(manifest, dict) else {}
            report.fail(f"{MANIFEST}: format {manifest.get('format')!r}, this verifier reads {FORMAT}")
            return report, manifest
        intact = _check_files(report, archive, manifest)
        check_ledger(report, archive, manifest.get("ledger", {}))
        try:
            control_map = json.loads(archive.read("controls/control_map.json"))
        except (KeyError, ValueError):
            report.fail("controls/control_map.json: missing or not JSON")
        else:
            check_controls(report, archive, control_map, intact)
        check_sample(report, archive, manifest.get("sample", {}))
    if previous:
        check_previous(report, manifest, previous)
    return report, manifest


def check_previous(report: Report, manifest: dict, previous: str) -> None:
    try:
        with zipfile.ZipFile(previous) as archive:
            before = json.loads(archive.read(MANIFEST)).get("ledger", {})
    except (OSError, zipfile.BadZipFile, KeyError, ValueError):
        report.fail(f"--previous {previous}: not a readable evidence pack")
        return
    ledger = manifest.get("ledger", {})
    if before.get("period_end_hash") == ledger.get("anchor_hash") and (before.get("last_sequence") or 0) + 1 == (
        ledger.get("first_sequence") or 0
    ):
        report.good("continuity: this pack's ledger extract starts where the previous pack's ended")
    else:
        report.fail(
            "continuity: this pack's anchor is not the previous pack's period-end hash "
            "(events between the two packs are not covered, or one of them was rewritten)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify an AccessGov evidence pack offline.")
    parser.add_argument("pack", help="the evidence pack (.zip)")
    parser.add_argument("--public-key", help="the signing public key (PEM) from the portal's Evidence page")
    parser.add_argument("--fingerprint", help="or: the key's fingerprint as shown in the portal (SHA256:…)")
    parser.add_argument("--previous", help="the previous period's pack, to check the ledger continues from it")
    args = parser.parse_args(argv)
    public_pem = None
    if args.public_key:
        with open(args.public_key, "rb") as f:
            public_pem = f.read()
    try:
        report, manifest = verify_pack(
            args.pack, public_key_pem=public_pem, fingerprint=args.fingerprint, previous=args.previous
        )
    except Unreadable as exc:
        print(f"FAIL {exc}")
        return 2
    period = manifest.get("period", {})
    print(f"Evidence pack #{manifest.get('pack_id')} for {period.get('since')} to {period.get('until')} (UTC)")
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
