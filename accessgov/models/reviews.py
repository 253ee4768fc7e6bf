"""Access review campaigns and their items."""

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from accessgov.models.catalog import Eligibility, Role, System
from accessgov.models.grants import Grant


class ReviewCampaign(models.Model):
    """A periodic certification of access in scope (eligibilities, and grants active for too long).
    Written only by services.reviews; immutable once closed."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"

    class NoResponse(models.TextChoices):
        REVOKE = "revoke", "Revoke what nobody confirmed"
        KEEP_AND_FLAG = "keep_and_flag", "Keep it, and flag it in the evidence"

    name = models.CharField(max_length=200)
    # The period a scheduled campaign covers ("2026-Q4"); empty for campaigns opened by hand. The
    # database allows one campaign per period, so two beats (or a retried task) cannot open it twice.
    period = models.CharField(max_length=20, blank=True, default="")
    systems = models.ManyToManyField(System, related_name="review_campaigns")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    no_response = models.CharField(max_length=20, choices=NoResponse.choices, default=NoResponse.REVOKE)
    keep_for = models.DurationField(default=timedelta(days=100), help_text="New end date of kept eligibility.")
    long_grant_threshold = models.DurationField(default=timedelta(days=7))
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    due_at = models.DateTimeField(help_text="Reviewers' deadline.")
    grace = models.DurationField(
        default=timedelta(days=2), help_text="Overdue period after the due date before the campaign closes itself."
    )
    start_reminded_at = models.DateTimeField(null=True, blank=True)
    half_reminded_at = models.DateTimeField(null=True, blank=True)
    overdue_reminded_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(due_at__gt=models.F("created_at")), name="campaign_due_after_start"
            ),
            models.UniqueConstraint(fields=["period"], condition=~models.Q(period=""), name="campaign_one_per_period"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def closes_at(self):
        """When the sweep closes the campaign if no auditor has: the due date plus the grace period."""
        return self.due_at + self.grace

    def is_overdue_at(self, now) -> bool:
        return self.status == self.Status.OPEN and now >= self.due_at


class ReviewItem(models.Model):
    """One thing to certify: an eligibility, or a grant active longer than the threshold."""

    class Decision(models.TextChoices):
        KEEP = "keep", "Keep"
        REVOKE = "revoke", "Revoke"

    campaign = models.ForeignKey(ReviewCampaign, on_delete=models.PROTECT, related_name="items")
    eligibility = models.ForeignKey(Eligibility, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    grant = models.ForeignKey(Grant, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    role = models.ForeignKey(Role, on_delete=models.PROTECT, related_name="+")
    subject_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    subject_group = models.ForeignKey("auth.Group", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="review_items"
    )
    decision = models.CharField(max_length=10, choices=Decision.choices, blank=True)
    comment = models.TextField(blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    applied_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=20, blank=True, help_text="kept, revoked, or kept_flagged")

    class Meta:
        ordering = ["campaign", "role", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(eligibility__isnull=False) & models.Q(grant__isnull=True))
                | (models.Q(eligibility__isnull=True) & models.Q(grant__isnull=False)),
                name="review_item_eligibility_xor_grant",
            ),
            models.CheckConstraint(
                condition=~models.Q(decided_by=models.F("subject_user")), name="review_item_not_decided_by_subject"
            ),
            models.CheckConstraint(
                condition=~models.Q(decision="revoke") | ~models.Q(comment=""), name="review_revoke_needs_comment"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.subject_user or self.subject_group} on {self.role}"
