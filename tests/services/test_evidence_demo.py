"""An evidence pack for the demo data (issue 21's done-when): `make run`'s data, built by
`manage.py evidence_pack` as the demo auditor, verifies offline with the operator's public key and holds the
demo's grants, requests and activity."""

import io
import zipfile
from datetime import UTC, datetime

import pytest
import time_machine
from django.core.management import call_command
from django.test import override_settings

from accessgov.evidence import verify
from accessgov.models import EvidencePack, Grant

DEMO_DAY = datetime(2027, 2, 10, 12, 0, tzinfo=UTC)


@pytest.mark.django_db(transaction=True)
def test_a_pack_of_the_demo_data_builds_and_verifies_offline(signing_key):
    with time_machine.travel(DEMO_DAY, tick=True):
        with override_settings(DEBUG=True):
            call_command("seed_demo", stdout=io.StringIO())
        out = io.StringIO()
        call_command("evidence_pack", "--since", "2027-01-01", "--until", "2027-02-10", "--as", "audrey", stdout=out)
    path = out.getvalue().splitlines()[0]
    pack = EvidencePack.objects.get()
    assert pack.status == EvidencePack.Status.READY and path.endswith(pack.file_name)
    report, _ = verify.verify_pack(path, public_key_pem=signing_key.read_bytes())
    assert report.ok, report.problems
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        grants_csv = archive.read(next(n for n in names if n.endswith("grants.csv"))).decode("utf-8")
    assert {n.rsplit("/", 1)[-1] for n in names} >= {"grants.csv", "requests.csv", "activity.csv", "control_map.csv"}
    demo_grants = Grant.objects.count()
    assert demo_grants > 0 and grants_csv.count("\n") >= demo_grants  # a header, then every demo grant
