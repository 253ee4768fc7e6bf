"""Scheduled evidence packs: the last complete month (or quarter) made once however often beat runs, built,
and delivered to a directory or to S3-compatible storage (a local moto server speaking the S3 API), each
delivery checked and recorded; a failed delivery is recorded and succeeds on a later day."""

import hashlib
import socket
from datetime import UTC, date, datetime

import pytest
import time_machine

from accessgov.models import AccessEvent, EvidencePack
from accessgov.services import evidence as evidence_services

pytestmark = pytest.mark.django_db
APRIL_2 = datetime(2025, 4, 2, 2, 30, tzinfo=UTC)


def _run_schedule(moment, capture):
    with time_machine.travel(moment, tick=False), capture(execute=True):
        return evidence_services.evidence_pack_schedule_due(moment)


def test_the_scheduled_periods_are_the_last_complete_month_and_quarter():
    assert evidence_services.scheduled_period("monthly", date(2025, 4, 2)) == (date(2025, 3, 1), date(2025, 3, 31))
    assert evidence_services.scheduled_period("monthly", date(2025, 1, 1)) == (date(2024, 12, 1), date(2024, 12, 31))
    assert evidence_services.scheduled_period("quarterly", date(2025, 4, 2)) == (date(2025, 1, 1), date(2025, 3, 31))
    assert evidence_services.scheduled_period("quarterly", date(2025, 3, 30)) == (date(2024, 10, 1), date(2024, 12, 31))


def test_a_monthly_pack_is_made_once_and_delivered_to_a_directory(
    world,
    settings,
    tmp_path,
    signing_key,
    django_capture_on_commit_callbacks,
):
    settings.EVIDENCE_SCHEDULE = ["monthly", "quarterly"]
    settings.EVIDENCE_DELIVERY_DIR = str(tmp_path / "share")
    queued = _run_schedule(APRIL_2, django_capture_on_commit_callbacks)
    again = _run_schedule(APRIL_2, django_capture_on_commit_callbacks)  # a second beat, or the next day
    assert len(queued) == 2 and again == []
    packs = {p.schedule: p for p in EvidencePack.objects.all()}
    assert (packs["monthly"].since, packs["monthly"].until) == (date(2025, 3, 1), date(2025, 3, 31))
    assert (packs["quarterly"].since, packs["quarterly"].until) == (date(2025, 1, 1), date(2025, 3, 31))
    for pack in packs.values():
        assert pack.status == "ready" and pack.requested_by is None
        delivered = tmp_path / "share" / pack.file_name
        assert pack.delivered_to == str(delivered)
        assert hashlib.sha256(delivered.read_bytes()).hexdigest() == pack.file_sha256
    assert AccessEvent.objects.filter(event_type="evidence.delivered").count() == 2
    assert (
        AccessEvent.objects.filter(event_type="evidence.requested", actor_label="system:evidence-schedule").count() == 2
    )


def test_a_delivery_that_fails_is_recorded_and_retried_the_next_day(
    world,
    settings,
    tmp_path,
    signing_key,
    django_capture_on_commit_callbacks,
):
    settings.EVIDENCE_SCHEDULE = ["monthly"]
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the share should be")
    settings.EVIDENCE_DELIVERY_DIR = str(blocker / "share")
    _run_schedule(APRIL_2, django_capture_on_commit_callbacks)
    pack = EvidencePack.objects.get()
    assert pack.status == "ready" and pack.delivered_at is None and "Could not write" in pack.delivery_error
    assert AccessEvent.objects.filter(event_type="evidence.delivery_failed").count() == 1
    settings.EVIDENCE_DELIVERY_DIR = str(tmp_path / "share")
    _run_schedule(datetime(2025, 4, 3, 2, 30, tzinfo=UTC), django_capture_on_commit_callbacks)
    pack.refresh_from_db()
    assert pack.delivered_at is not None and pack.delivery_error == ""
    assert EvidencePack.objects.count() == 1
    assert evidence_services.evidence_pack_deliver(pack.pk) is False  # delivered once, not again


@pytest.fixture
def s3_server(monkeypatch):
    """A local server speaking the S3 API (moto), with throwaway credentials for it."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_a_scheduled_pack_is_delivered_to_s3_compatible_storage_and_read_back(
    world,
    settings,
    s3_server,
    signing_key,
    django_capture_on_commit_callbacks,
):
    import boto3

    settings.EVIDENCE_SCHEDULE = ["monthly"]
    settings.EVIDENCE_DELIVERY_S3_BUCKET = "audit-evidence"
    settings.EVIDENCE_DELIVERY_S3_PREFIX = "accessgov/"
    settings.EVIDENCE_DELIVERY_S3_ENDPOINT_URL = s3_server
    settings.EVIDENCE_DELIVERY_S3_REGION = "us-east-1"
    # The bucket does not exist yet: the first delivery fails and is recorded.
    _run_schedule(APRIL_2, django_capture_on_commit_callbacks)
    pack = EvidencePack.objects.get()
    assert pack.delivered_at is None and "NoSuchBucket" in pack.delivery_error
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    client.create_bucket(Bucket="audit-evidence")
    _run_schedule(datetime(2025, 4, 3, 2, 30, tzinfo=UTC), django_capture_on_commit_callbacks)
    pack.refresh_from_db()
    key = f"accessgov/{pack.file_name}"
    assert pack.delivered_to == f"s3://audit-evidence/{key}"
    stored = client.get_object(Bucket="audit-evidence", Key=key)
    assert hashlib.sha256(stored["Body"].read()).hexdigest() == pack.file_sha256
    assert stored["Metadata"]["sha256"] == pack.file_sha256
    delivered = AccessEvent.objects.get(event_type="evidence.delivered")
    assert delivered.data["location"] == pack.delivered_to and delivered.data["file_sha256"] == pack.file_sha256
