"""Evidence packs: requesting one (auditors, or the schedule), building it in the background, recording
downloads and delivering scheduled packs. Every change is written with its access event in one
transaction; the build itself only reads (one REPEATABLE READ snapshot on PostgreSQL, so every file of a
pack describes the same moment), and its progress is bookkeeping written on a second connection.

Callers: the Evidence pages, the API, ``manage.py evidence_pack``, the build and schedule tasks.
"""

import logging
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, transaction
from django.db.models import Q

from accessgov import clock, permissions
from accessgov.evidence import builder, delivery
from accessgov.evidence.signing import SigningKeyMissing
from accessgov.exceptions import PolicyViolation, TransitionNotAllowed
from accessgov.models import AccessEvent, EvidencePack, System, User
from accessgov.services import after_commit
from accessgov.services.events import event_record

logger = logging.getLogger("accessgov.evidence")
Type = AccessEvent.Type
Status = EvidencePack.Status
EARLIEST = date(2000, 1, 1)
# A build that has not finished after this is taken to have died with its worker and may be claimed again.
BUILD_LEASE = timedelta(minutes=15)


def evidence_period_problem(since: date | None, until: date | None, today: date) -> str | None:
    """Why a period cannot be packed, or None: both days needed, in order, not before 2000, not after
    today (UTC), at most EVIDENCE_MAX_PERIOD_DAYS long."""
    if since is None or until is None:
        return "Give the first and the last day of the period."
    if since > until:
        return "The period starts after it ends."
    if since < EARLIEST:
        return f"The period cannot start before {EARLIEST:%Y-%m-%d}."
    if until > today:
        return "The period cannot end after today (UTC)."
    if (until - since).days + 1 > settings.EVIDENCE_MAX_PERIOD_DAYS:
        return f"A pack covers at most {settings.EVIDENCE_MAX_PERIOD_DAYS} days; split the period."
    return None


def _schedule_build(pack_id: int) -> None:
    after_commit.enqueue("build_evidence_pack", pack_id)


def evidence_pack_request(
    actor: User,
    *,
    since: date | None,
    until: date | None,
    systems: list[System] | None = None,
    client_address: str | None = None,
    queue: bool = True,
) -> EvidencePack:
    """An auditor asks for a pack of a period (and optionally some systems): the pack row and an
    ``evidence.requested`` event, then the build task after commit (``queue=False``: the caller builds it,
    as ``manage.py evidence_pack`` does). Raises NotAuthorized (not an
    auditor) or PolicyViolation (a period it refuses)."""
    permissions.ensure_can_build_evidence_pack(actor)
    problem = evidence_period_problem(since, until, clock.now().date())
    if problem:
        raise PolicyViolation(problem)
    systems = sorted(set(systems or []), key=lambda s: s.pk)
    with transaction.atomic():
        pack = EvidencePack.objects.create(since=since, until=until, requested_by=actor)
        if systems:
            pack.systems.set(systems)
        event_record(
            Type.EVIDENCE_REQUESTED,
            actor=actor,
            client_address=client_address,
            reason=f"Evidence pack for {since} to {until}",
            data={
                "pack_id": pack.pk,
                "since": since.isoformat(),
                "until": until.isoformat(),
                "systems": [s.slug for s in systems] or "all",
            },
        )
        if queue:
            _schedule_build(pack.pk)
    return pack


def scheduled_period(schedule: str, today: date) -> tuple[date, date]:
    """The last complete month or quarter before ``today``."""
    first_of_month = today.replace(day=1)
    if schedule == EvidencePack.Schedule.MONTHLY:
        until = first_of_month - timedelta(days=1)
        return until.replace(day=1), until
    quarter_start = first_of_month.replace(month=3 * ((today.month - 1) // 3) + 1)
    until = quarter_start - timedelta(days=1)
    return until.replace(month=3 * ((until.month - 1) // 3) + 1, day=1), until


def evidence_pack_schedule_due(now: datetime) -> list[int]:
    """Beat, daily: for each cadence in EVIDENCE_SCHEDULE, the pack of the last complete month or quarter,
    once (the database refuses a second one, so two beats make one); and another try at delivering
    scheduled packs whose delivery failed. Returns the ids of the packs it queued."""
    queued = []
    for schedule in settings.EVIDENCE_SCHEDULE:
        since, until = scheduled_period(schedule, now.date())
        if EvidencePack.objects.filter(schedule=schedule, since=since, until=until).exists():
            continue
        try:
            with transaction.atomic():
                pack = EvidencePack.objects.create(since=since, until=until, schedule=schedule)
                event_record(
                    Type.EVIDENCE_REQUESTED,
                    job="evidence-schedule",
                    reason=f"Scheduled {schedule} evidence pack for {since} to {until}",
                    data={"pack_id": pack.pk, "since": since.isoformat(), "until": until.isoformat(), "systems": "all"},
                )
                _schedule_build(pack.pk)
        except IntegrityError:
            continue  # another beat made it a moment ago
        queued.append(pack.pk)
    for pack_id in (
        EvidencePack.objects.filter(
            status=Status.READY, delivered_at__isnull=True, created_at__gte=now - timedelta(days=30)
        )
        .exclude(schedule="")
        .values_list("pk", flat=True)
    ):
        evidence_pack_deliver(pack_id)
    return queued


class _Progress:
    """Writes a build's progress to its row at most once per percent. On PostgreSQL the build reads in a
    snapshot transaction, so the row is updated through a second connection (autocommit) that the pages
    can see at once; elsewhere on the build's own connection, which is in autocommit then."""

    def __init__(self, pack_id: int):
        self.pack_id, self.last = pack_id, -1
        self.other = None
        if connection.vendor == "postgresql" and connection.in_atomic_block:
            self.other = connections.create_connection(DEFAULT_DB_ALIAS)

    def __call__(self, percent: int, step: str) -> None:
        percent = max(0, min(int(percent), 99))
        if percent == self.last:
            return
        self.last = percent
        if self.other is not None:
            with self.other.cursor() as cursor:
                cursor.execute(
                    "UPDATE accessgov_evidencepack SET progress = %s, step = %s WHERE id = %s",
                    [percent, step[:200], self.pack_id],
                )
        else:
            EvidencePack.objects.filter(pk=self.pack_id).update(progress=percent, step=step[:200])

    def close(self) -> None:
        if self.other is not None:
            self.other.close()


def _claim(pack_id: int, now: datetime) -> EvidencePack | None:
    with transaction.atomic():
        pack = EvidencePack.objects.select_for_update(of=("self",)).filter(pk=pack_id).first()
        if pack is None:
            return None
        stale = pack.status == Status.BUILDING and pack.started_at and pack.started_at < now - BUILD_LEASE
        if pack.status != Status.QUEUED and not stale:
            return None  # built, failed, or being built: a duplicate task does nothing
        pack.status, pack.started_at, pack.progress, pack.step = Status.BUILDING, now, 0, "Starting"
        pack.save(update_fields=["status", "started_at", "progress", "step"])
        return pack


def _in_snapshot(build):
    """Run ``build`` in one REPEATABLE READ, READ ONLY transaction on PostgreSQL (every query sees the same
    moment); as it is elsewhere, or inside a caller's transaction (tests)."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return build()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return build()


def evidence_pack_build(pack_id: int, *, seed: str | None = None) -> EvidencePack | None:
    """Build a queued pack (the task's body; idempotent: a pack already built, failed or being built is
    left alone). On success the pack is ready with its file's hashes and an ``evidence.built`` event; on
    any error it is failed with the reason and an ``evidence.failed`` event. A scheduled pack is then
    delivered. Returns the pack, or None when there was nothing to do."""
    now = clock.now()
    pack = _claim(pack_id, now)
    if pack is None:
        return None
    try:
        progress = None

        def build():
            nonlocal progress
            progress = _Progress(pack.pk)
            try:
                return builder.build_pack(pack, as_of=clock.now(), progress=progress, seed=seed)
            finally:
                progress.close()

        result = _in_snapshot(build)
    except Exception as exc:
        if isinstance(exc, SigningKeyMissing):
            reason = str(exc)
        else:
            logger.exception("evidence pack %s failed", pack.pk)
            reason = f"The build failed ({exc.__class__.__name__}); the error is in the worker's log."
        with transaction.atomic():
            EvidencePack.objects.filter(pk=pack.pk).update(
                status=Status.FAILED, error=reason, finished_at=clock.now(), step="Failed"
            )
            event_record(Type.EVIDENCE_FAILED, job="evidence", reason=reason, data={"pack_id": pack.pk})
        pack.refresh_from_db()
        return pack
    with transaction.atomic():
        pack = EvidencePack.objects.select_for_update(of=("self",)).get(pk=pack.pk)
        pack.status, pack.progress, pack.step, pack.finished_at = Status.READY, 100, "Ready", clock.now()
        pack.file_name, pack.file_size, pack.file_sha256 = result.file_name, result.size, result.sha256
        pack.manifest_sha256, pack.key_fingerprint = result.manifest_sha256, result.fingerprint
        pack.ledger_head_sequence, pack.ledger_head_hash = result.head_sequence, result.head_hash
        pack.sample_seed, pack.summary, pack.error = result.summary["seed"], result.summary, ""
        pack.save()
        event_record(
            Type.EVIDENCE_BUILT,
            job="evidence",
            reason=f"Evidence pack for {pack.since} to {pack.until} built and signed",
            data={
                "pack_id": pack.pk,
                "file_sha256": result.sha256,
                "manifest_sha256": result.manifest_sha256,
                "key_fingerprint": result.fingerprint,
                "ledger_head_sequence": result.head_sequence,
                "ledger_head_hash": result.head_hash,
                "ledger_problem": result.summary["ledger"]["problem"],
            },
        )
    if pack.schedule and delivery.configured():
        evidence_pack_deliver(pack.pk)
    return pack


def evidence_pack_record_download(actor: User, pack: EvidencePack, *, client_address: str | None = None) -> None:
    """A download of a ready pack is evidence too: one ``evidence.downloaded`` event, before the file is
    sent. Raises NotAuthorized (not an auditor) or TransitionNotAllowed (not ready)."""
    permissions.ensure_can_build_evidence_pack(actor)
    if pack.status != Status.READY:
        raise TransitionNotAllowed("This pack is not ready.")
    with transaction.atomic():
        event_record(
            Type.EVIDENCE_DOWNLOADED,
            actor=actor,
            client_address=client_address,
            reason=f"Evidence pack #{pack.pk} downloaded",
            data={"pack_id": pack.pk, "file_sha256": pack.file_sha256},
        )


def evidence_pack_deliver(pack_id: int) -> bool:
    """Copy a ready scheduled pack to the configured location (a directory, or S3-compatible storage) and
    record ``evidence.delivered`` with where and its SHA-256; a failure is recorded (``evidence.delivery_failed``)
    and tried again by the next daily run. The I/O runs outside any transaction; a conditional update
    claims the delivery, so two runs never deliver twice at once."""
    if not delivery.configured():
        return False
    now = clock.now()
    claimed = (
        EvidencePack.objects.filter(pk=pack_id, status=Status.READY, delivered_at__isnull=True)
        .filter(Q(delivery_claimed_at__isnull=True) | Q(delivery_claimed_at__lt=now - BUILD_LEASE))
        .update(delivery_claimed_at=now)
    )
    if not claimed:
        return False
    pack = EvidencePack.objects.get(pk=pack_id)
    try:
        location = delivery.deliver(builder.evidence_dir() / pack.file_name, pack.file_name, pack.file_sha256)
    except Exception as exc:
        if isinstance(exc, delivery.DeliveryError):
            reason = str(exc)
        else:
            logger.exception("delivery of evidence pack %s failed", pack_id)
            reason = f"Delivery failed ({exc.__class__.__name__}); the error is in the worker's log."
        with transaction.atomic():
            EvidencePack.objects.filter(pk=pack_id).update(delivery_error=reason[:2000], delivery_claimed_at=None)
            event_record(
                Type.EVIDENCE_DELIVERY_FAILED,
                job="evidence-delivery",
                reason=reason[:500],
                data={"pack_id": pack_id, "target": delivery.target_label()},
            )
        return False
    with transaction.atomic():
        EvidencePack.objects.filter(pk=pack_id).update(
            delivered_at=clock.now(), delivered_to=location, delivery_error="", delivery_claimed_at=None
        )
        event_record(
            Type.EVIDENCE_DELIVERED,
            job="evidence-delivery",
            reason=f"Evidence pack #{pack_id} delivered to {location}",
            data={"pack_id": pack_id, "location": location, "file_sha256": pack.file_sha256},
        )
    return True
