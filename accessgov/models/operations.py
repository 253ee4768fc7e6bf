"""Bookkeeping of background work: the last run of each periodic job, the scheduler lease."""

from django.db import models


class JobRun(models.Model):
    """The last run of a periodic job (for /metrics and the dashboards): one row per job name."""

    name = models.CharField(max_length=50, unique=True)
    finished_at = models.DateTimeField()
    duration_seconds = models.FloatField()
    result = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"{self.name} at {self.finished_at:%Y-%m-%d %H:%M:%S}"


class SchedulerLease(models.Model):
    """Which scheduler process runs the expiry scheduler now (accessgov/scheduler.py): one row per
    scheduler name. The holder renews ``expires_at`` on every round; a standby takes the row over once
    it has lapsed (the holder died or hung) or was released (the holder stopped). Written only by
    services.scheduler. Exclusivity is for efficiency, not correctness: every transition it runs is
    set-based and skip-locked, and every outbox item leased, so two holders at once do nothing twice."""

    name = models.CharField(max_length=50, unique=True)
    holder = models.CharField(max_length=200, blank=True)
    acquired_at = models.DateTimeField(null=True, blank=True)
    renewed_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name}: {self.holder or 'nobody'}"
