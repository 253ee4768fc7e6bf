"""The inbox's read marks (issue 18). The items themselves are derived: "needs me" from current state,
"what happened" from the access event ledger (docs/DECISIONS.md, "The inbox")."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from accessgov.models.events import AccessEvent


class InboxReadMark(models.Model):
    """One "what happened" inbox item (an access event about the person's own access) marked read by
    them. The items themselves are derived from the ledger (docs/DECISIONS.md, "The inbox"); only read
    marks are stored. No database-level foreign key to the ledger (like WebhookDelivery): its TRUNCATE
    guard and the retention purge stay as they are; a mark of a purged event is simply never read."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    event = models.ForeignKey(AccessEvent, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    read_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "event"], name="inbox_read_once")]

    def __str__(self) -> str:
        return f"{self.user_id} read event #{self.event_id}"
