"""Evidence packs (signed compliance exports)."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from accessgov.models.catalog import System


class EvidencePack(models.Model):
    """One signed evidence bundle for a period and a scope (docs/EVIDENCE.md): populations, control map,
    auditor sample, summary, ledger extract and a signed manifest, in one ZIP file under EVIDENCE_DIR.
    Written only by services.evidence; ``progress``/``step`` are bookkeeping written while it builds."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        BUILDING = "building", "Building"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    class Schedule(models.TextChoices):
        MONTHLY = "monthly", "Monthly"
        QUARTERLY = "quarterly", "Quarterly"

    since = models.DateField(help_text="First day of the period (UTC).")
    until = models.DateField(help_text="Last day of the period (UTC, inclusive).")
    systems = models.ManyToManyField(System, blank=True, related_name="+", help_text="Empty: every system.")
    schedule = models.CharField(max_length=10, choices=Schedule.choices, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    step = models.CharField(max_length=200, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    sample_seed = models.CharField(max_length=40, blank=True)
    file_name = models.CharField(max_length=200, blank=True)
    file_size = models.PositiveBigIntegerField(null=True, blank=True)
    file_sha256 = models.CharField(max_length=64, blank=True)
    manifest_sha256 = models.CharField(max_length=64, blank=True)
    key_fingerprint = models.CharField(max_length=100, blank=True)
    ledger_head_sequence = models.PositiveBigIntegerField(null=True, blank=True)
    ledger_head_hash = models.CharField(max_length=64, blank=True)
    summary = models.JSONField(default=dict, blank=True, help_text="Row counts, control results, ledger proof.")
    error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    delivered_to = models.CharField(max_length=500, blank=True)
    delivery_error = models.TextField(blank=True)
    delivery_claimed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.CheckConstraint(condition=models.Q(until__gte=models.F("since")), name="evidence_period_ordered"),
            # Two beats, or a retried task, never make the same scheduled pack twice.
            models.UniqueConstraint(
                fields=["schedule", "since", "until"],
                condition=~models.Q(schedule=""),
                name="evidence_one_per_schedule",
            ),
        ]

    def __str__(self) -> str:
        return f"Evidence pack #{self.pk} {self.since}..{self.until}"

    @property
    def in_progress(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.BUILDING)
