"""Activity evidence (issue 17): what was actually done with each grant, and how it is sealed.

The data model, for anyone reading it (evidence packs, exports, the docs):

- ``ActivityRecord`` — one row per thing observed at a target: a *session* (seen by the sampler in
  ``pg_stat_activity``, or reported through the ingest API), a *statement* (a pgaudit log line, a
  statement the sampler saw running, or one reported through the API) or a *digest* line (one normalised
  statement from ``pg_stat_statements``: calls and rows between the grant's apply and its removal).
  Attributed to a grant by target + login role + time window (``grant`` empty: activity without a grant).
  Append-only in practice: statements are never changed; a session row's ``ended_at``/``state`` move while
  the sampler still sees it. Once ``seal`` is set, PostgreSQL refuses any UPDATE or DELETE of the row
  (trigger, migration 0017), except the retention purge of sealed rows.
- ``ActivitySeal`` — the seal of a set of rows (a grant's rows after its removal is confirmed; later
  stragglers and activity without a grant get seals of their own): row count, counts by kind and class,
  and a SHA-256 over the rows' canonical content (``ActivityRecord.canonical``, in id order). Each seal is
  one ``activity.sealed`` access event in the hash-chained ledger carrying the same numbers, and
  ``manage.py verify_audit`` recomputes every seal from its rows.
- ``GrantActivity`` — per grant: what capture did at the target (pgaudit on/off, digest snapshots, errors)
  and running totals (sessions, statements by class, first/last activity) that pages, reviews and the
  right-sizing report read. Bookkeeping: derived from the records, never evidence by itself.
- ``ActivityFinding`` — activity beyond what was granted (no grant, after the end, writes under read-only,
  DDL or privilege changes under read-only or read-write, an unexpected address, writes the reason did not
  mention): raised as an ``activity.finding`` event, signed off by a second person (``activity.signed_off``).
- ``ActivityCaptureState`` and ``ActivityIngestBatch`` — bookkeeping of the capture runs (leases, log file
  offsets) and of pushed batches (so a replayed batch is stored once).

Written only by ``accessgov.services.activity``.
"""

from datetime import UTC, datetime

from django.conf import settings
from django.db import models
from django.utils import timezone

from accessgov.ledger import hashing
from accessgov.models.catalog import Role, System
from accessgov.models.events import AccessEvent
from accessgov.models.grants import Grant


class ActivitySeal(models.Model):
    """A sealed set of activity rows; its numbers are also in the ``activity.sealed`` ledger event."""

    system = models.ForeignKey(System, on_delete=models.PROTECT, related_name="+")
    grant = models.ForeignKey(Grant, null=True, blank=True, on_delete=models.PROTECT, related_name="activity_seals")
    sealed_at = models.DateTimeField(default=timezone.now)
    row_count = models.PositiveIntegerField()
    content_hash = models.CharField(max_length=64)
    summary = models.JSONField(default=dict, blank=True, help_text="Counts by kind and statement class.")
    # The ledger event stays unreferenced by foreign keys (its TRUNCATE guard and retention purge work unchanged).
    event = models.ForeignKey(
        AccessEvent, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    purged_at = models.DateTimeField(null=True, blank=True, help_text="Its rows were deleted by the retention purge.")

    class Meta:
        ordering = ["pk"]
        indexes = [models.Index(fields=["sealed_at"], name="activity_seal_time")]

    def __str__(self) -> str:
        return f"Activity seal #{self.pk} ({self.row_count} rows)"


class ActivityRecord(models.Model):
    """One session, statement or digest line observed at a target (see the module docstring)."""

    class Kind(models.TextChoices):
        SESSION = "session", "Session"
        STATEMENT = "statement", "Statement"
        DIGEST = "digest", "Statement digest"

    class Source(models.TextChoices):
        SAMPLER = "sampler", "Session sampler (pg_stat_activity)"
        DIGEST = "pg_stat_statements", "Statement digest (pg_stat_statements)"
        PGAUDIT = "pgaudit", "Statement log (pgaudit)"
        INGEST = "ingest", "Reported through the ingest API"

    class StatementClass(models.TextChoices):
        NONE = "", "—"
        READ = "read", "Read"
        WRITE = "write", "Write (DML)"
        DDL = "ddl", "Schema (DDL)"
        PRIVILEGE = "privilege", "Privileges and roles"
        SESSION = "session", "Session and configuration"
        OTHER = "other", "Other"

    # activity_one_per_source_key (system, …) and activity_no_grant (system, id) serve lookups by system.
    # No database-level foreign keys on system and grant: checking them is deferred to the commit, where it
    # cost 1.2 s of every 100,000 rows ingested (docs/PERFORMANCE.md). Deleting a system or a grant is
    # refused by the ORM (PROTECT) and neither is ever deleted by the application; the seal's hash covers
    # both ids, so a row pointed elsewhere afterwards is caught by verify_audit.
    system = models.ForeignKey(System, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False)
    grant = models.ForeignKey(
        Grant,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="activity_records",
        db_index=False,
        db_constraint=False,
    )  # activity_grant (grant, id) serves every lookup by grant
    kind = models.CharField(max_length=10, choices=Kind.choices)
    source = models.CharField(max_length=20, choices=Source.choices)
    principal = models.CharField(max_length=200, help_text="The login role (or account) at the target.")
    occurred_at = models.DateTimeField(help_text="Statement time, session start, or digest snapshot time.")
    ended_at = models.DateTimeField(null=True, blank=True, help_text="Sessions: last seen (or ended).")
    state = models.CharField(max_length=20, blank=True, help_text="Sessions: last state seen; digest: shared.")
    session_key = models.CharField(max_length=100, blank=True)
    client_address = models.GenericIPAddressField(null=True, blank=True)
    application = models.CharField(max_length=200, blank=True)
    database = models.CharField(max_length=200, blank=True)
    command = models.CharField(max_length=60, blank=True)
    statement_class = models.CharField(max_length=10, choices=StatementClass.choices, blank=True)
    statement = models.TextField(blank=True, help_text="May hold personal data: auditors and owners only.")
    object_name = models.CharField(max_length=300, blank=True)
    calls = models.BigIntegerField(default=1)
    rows = models.BigIntegerField(null=True, blank=True)
    # NULL, not "": the unique (system, source_key) constraint applies only to rows that have a key.
    source_key = models.CharField(max_length=200, null=True, blank=True, help_text="De-duplication key.")  # noqa: DJ001
    findings = models.CharField(max_length=100, blank=True, help_text="Finding kinds this row raised.")
    ingested_at = models.DateTimeField(default=timezone.now)
    seal = models.ForeignKey(
        ActivitySeal, null=True, blank=True, on_delete=models.PROTECT, related_name="records", db_index=False
    )  # activity_seal: partial, only sealed rows

    class Meta:
        ordering = ["pk"]
        # Every index is written for each of the 100k rows an ingest may store: only those a query needs.
        indexes = [
            models.Index(fields=["grant", "id"], name="activity_grant"),
            # Activity without a grant, per system (findings, sealing).
            models.Index(fields=["system", "id"], condition=models.Q(grant__isnull=True), name="activity_no_grant"),
            # The retention purge deletes by seal.
            models.Index(fields=["seal"], condition=models.Q(seal__isnull=False), name="activity_seal"),
            # The sampler's open sessions (a handful, whatever the size of the table).
            models.Index(
                fields=["system"],
                condition=models.Q(kind="session", seal__isnull=True) & ~models.Q(state="ended"),
                name="activity_open_sessions",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["system", "source_key"],
                condition=models.Q(source_key__isnull=False),
                name="activity_one_per_source_key",
            ),
            models.CheckConstraint(condition=models.Q(calls__gte=0), name="activity_calls_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} by {self.principal} at {self.occurred_at:%Y-%m-%d %H:%M:%S}"

    # What a seal covers, in this order (everything but the seal itself and the bookkeeping ingestion time).
    HASHED_FIELDS = (
        "id",
        "system_id",
        "grant_id",
        "kind",
        "source",
        "principal",
        "occurred_at",
        "ended_at",
        "state",
        "session_key",
        "client_address",
        "application",
        "database",
        "command",
        "statement_class",
        "statement",
        "object_name",
        "calls",
        "rows",
        "source_key",
        "findings",
    )

    @staticmethod
    def canonical(values: tuple) -> str:
        """One row (values in HASHED_FIELDS order) as the canonical text a seal hashes: JSON of the list,
        times in UTC with microseconds. The same function seals and verifies."""
        return hashing.canonical_json([_utc(value) if isinstance(value, datetime) else value for value in values])


def _utc(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


class GrantActivity(models.Model):
    """Per grant: what capture did at the target, and running totals of its activity (bookkeeping)."""

    grant = models.OneToOneField(Grant, on_delete=models.PROTECT, primary_key=True, related_name="activity")
    levels = models.JSONField(default=list, blank=True, help_text="Capture levels in force at apply.")
    pgaudit_set_at = models.DateTimeField(null=True, blank=True)
    pgaudit_reset_at = models.DateTimeField(null=True, blank=True)
    digest_start = models.JSONField(null=True, blank=True, help_text="pg_stat_statements snapshot at apply.")
    digest_started_at = models.DateTimeField(null=True, blank=True)
    digest_ended_at = models.DateTimeField(null=True, blank=True)
    capture_error = models.TextField(blank=True)
    session_count = models.PositiveIntegerField(default=0)
    statement_count = models.PositiveIntegerField(default=0)
    read_count = models.PositiveIntegerField(default=0)
    write_count = models.PositiveIntegerField(default=0)
    ddl_count = models.PositiveIntegerField(default=0)
    privilege_count = models.PositiveIntegerField(default=0)
    other_count = models.PositiveIntegerField(default=0)
    digest_calls = models.PositiveBigIntegerField(default=0, help_text="Calls in the statement digest.")
    first_activity_at = models.DateTimeField(null=True, blank=True)
    last_activity_at = models.DateTimeField(null=True, blank=True)
    finding_count = models.PositiveIntegerField(default=0)
    sealed_at = models.DateTimeField(null=True, blank=True)
    late_activity = models.BooleanField(
        default=False, help_text="Activity arrived after the seal: the next sweep seals it (a supplement)."
    )

    class Meta:
        verbose_name_plural = "grant activity"
        indexes = [
            # Sealing looks for ended grants not sealed yet, and sealed ones with late activity.
            models.Index(fields=["grant"], condition=models.Q(sealed_at__isnull=True), name="grant_activity_unsealed"),
            models.Index(fields=["grant"], condition=models.Q(late_activity=True), name="grant_activity_late"),
        ]

    def __str__(self) -> str:
        return f"Activity of grant #{self.grant_id}"

    @property
    def used(self) -> bool:
        return bool(self.session_count or self.statement_count or self.digest_calls)


class ActivityFinding(models.Model):
    """Activity beyond what was granted; a second person (not the grantee, independent of them) signs it off."""

    class Kind(models.TextChoices):
        NO_GRANT = "no_grant", "Activity without a grant"
        AFTER_END = "after_end", "Activity after the grant ended"
        WRITE_UNDER_READ_ONLY = "write_read_only", "Writes under a read-only role"
        DDL = "ddl", "Schema change (DDL) under a read-only or read-write role"
        PRIVILEGE = "privilege", "Privilege or role change under a read-only or read-write role"
        UNEXPECTED_ADDRESS = "address", "Activity from an unexpected address"
        BEYOND_REASON = "reason", "Writes, though the request's reason speaks only of reading"

    class Status(models.TextChoices):
        OPEN = "open", "Waiting for sign-off"
        SIGNED_OFF = "signed_off", "Signed off"

    system = models.ForeignKey(System, on_delete=models.PROTECT, related_name="+")
    grant = models.ForeignKey(Grant, null=True, blank=True, on_delete=models.PROTECT, related_name="activity_findings")
    role = models.ForeignKey(Role, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The person whose login it was (when known).",
    )
    principal = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    count = models.PositiveIntegerField(default=1)
    example_record_id = models.BigIntegerField(null=True, blank=True)
    example_command = models.CharField(max_length=60, blank=True)
    detail = models.CharField(max_length=300, blank=True, help_text="Why, in a sentence (no statement text).")
    raised_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.OPEN)
    signed_off_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    signed_off_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True)

    class Meta:
        ordering = ["-raised_at", "-pk"]
        indexes = [
            models.Index(fields=["status", "raised_at"], name="finding_status_raised"),
            models.Index(fields=["role", "raised_at"], name="finding_role_raised"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["grant", "kind"],
                condition=models.Q(status="open", grant__isnull=False),
                name="finding_one_open_per_grant_kind",
            ),
            models.UniqueConstraint(
                fields=["system", "principal", "kind"],
                condition=models.Q(status="open", grant__isnull=True),
                name="finding_one_open_per_principal_kind",
            ),
            # Four eyes: the person whose activity it is never signs it off (the service refuses it too).
            models.CheckConstraint(
                condition=models.Q(signed_off_by__isnull=True) | ~models.Q(signed_off_by=models.F("user")),
                name="finding_not_signed_off_by_subject",
            ),
            models.CheckConstraint(
                condition=models.Q(status="open") | (models.Q(signed_off_at__isnull=False) & ~models.Q(comment="")),
                name="finding_signed_off_with_comment",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.principal}"

    @property
    def is_open(self) -> bool:
        return self.status == self.Status.OPEN


class ActivityCaptureState(models.Model):
    """Per system: the capture run's lease (so two workers never sample or read one system at once), when
    it last sampled, how far it read each log file, and its last error. Bookkeeping."""

    system = models.OneToOneField(System, on_delete=models.CASCADE, primary_key=True, related_name="+")
    lease_until = models.DateTimeField(null=True, blank=True)
    last_sampled_at = models.DateTimeField(null=True, blank=True)
    last_sample_ms = models.FloatField(null=True, blank=True)
    log_cursors = models.JSONField(default=dict, blank=True, help_text="Per log file: inode and offset read.")
    last_ingested_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Activity capture of system #{self.system_id}"


class ActivityIngestBatch(models.Model):
    """A batch pushed to the ingest API, by the sender's id (``webhook-id`` or ``batch_id``): a replay or
    retry of the same batch is answered without storing anything twice."""

    system = models.ForeignKey(System, on_delete=models.CASCADE, related_name="+")
    message_id = models.CharField(max_length=200)
    received_at = models.DateTimeField(default=timezone.now)
    records = models.PositiveIntegerField(default=0)
    stored = models.PositiveIntegerField(default=0)
    via = models.CharField(max_length=100, blank=True, help_text="api token #id, or signature")

    class Meta:
        ordering = ["-received_at"]
        constraints = [
            models.UniqueConstraint(fields=["system", "message_id"], name="activity_batch_once"),
        ]

    def __str__(self) -> str:
        return f"Batch {self.message_id} ({self.stored} stored)"
