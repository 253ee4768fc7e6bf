"""Requesting, reading and verifying evidence packs."""

import csv
import io
import zipfile

import time_machine

from accessgov.evidence import verify
from accessgov.models import EvidencePack
from accessgov.services import evidence as evidence_services
from tests.support.evidence_world import BUILT_AT, SINCE, UNTIL


def request_pack(world, since=SINCE, until=UNTIL, systems=None) -> EvidencePack:
    with time_machine.travel(BUILT_AT, tick=False):
        return evidence_services.evidence_pack_request(world.auditor, since=since, until=until, systems=systems)


def pack_path(pack):
    from django.conf import settings

    return settings.EVIDENCE_DIR / pack.file_name


def read_csv(archive: zipfile.ZipFile, name: str) -> list[dict]:
    text = archive.read(name).decode("utf-8")
    assert text.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(text[1:], newline="")))


def run_verify(path, key) -> tuple[bool, list[str]]:
    report, _ = verify.verify_pack(str(path), public_key_pem=key.read_bytes())
    return report.ok, report.problems
