"""Pending requests that leave the queue without a decision because what they asked for can no longer be
given: the requester is no longer eligible (``access_requests``), or the grant an extension would move has
ended (here, for every path that ends a grant and for the sweep). Each becomes cancelled with one
request.withdrawn event whose reason its approvers and requester read."""

from datetime import datetime

from django.db import transaction
from django.db.models import Q

from accessgov.models import AccessEvent, AccessRequest, Grant
from accessgov.services import notification_outbox
from accessgov.services.events import event_record_bulk

Status = AccessRequest.Status
WITHDRAWN_BECAUSE_GRANT_ENDED = (
    "The access this extension was for has ended; request access again if it is still needed."
)


def requests_withdraw(due: list[AccessRequest], *, now: datetime, reason: str, job: str) -> None:
    """Pending requests (locked by the caller, loaded with ``extends_grant_id``) become cancelled, one
    request.withdrawn event each (an extension's names its grant, as its other events do)."""
    AccessRequest.objects.filter(pk__in=[r.pk for r in due], status=Status.PENDING).update(
        status=Status.CANCELLED, decided_at=now
    )
    event_record_bulk(
        [
            AccessEvent(
                event_type=AccessEvent.Type.REQUEST_WITHDRAWN,
                actor_label=f"system:{job}",
                access_request_id=r.pk,
                grant_id=r.extends_grant_id,
                role_id=r.role_id,
                occurred_at=now,
                reason=reason,
            )
            for r in due
        ]
    )
    for r in due:
        notification_outbox.notify("request_withdrawn", r.pk)


def extensions_withdraw_for_ended_grants(
    now: datetime, *, grant_ids: list[int] | None = None, job: str = "sweep", batch_size: int = 1000
) -> int:
    """Set-based: pending extension requests whose grant is no longer active at ``now`` (released, revoked,
    expired — swept or not) are withdrawn. Called in the transaction that ends a grant (``grant_ids``: that
    grant) and by every sweep (all of them: expiry in bulk, and any a locked row made wait). Rows another
    transaction holds are skipped: an approval in flight finds the grant ended and is refused."""
    pending = AccessRequest.objects.filter(status=Status.PENDING, kind=AccessRequest.Kind.EXTENSION)
    if grant_ids is not None:
        pending = pending.filter(extends_grant_id__in=grant_ids)
    ended = ~Q(extends_grant__status=Grant.Status.ACTIVE) | Q(extends_grant__expires_at__lte=now)
    total = 0
    while True:
        # Inside the transaction that ends a grant this adds no savepoint (savepoint=False); alone (the sweep) each
        # batch commits by itself.
        with transaction.atomic(savepoint=False):
            due = list(
                pending.filter(ended)
                .select_for_update(skip_locked=True, no_key=True, of=("self",))
                .order_by("pk")
                .only("pk", "role_id", "extends_grant_id")[:batch_size]
            )
            if due:
                requests_withdraw(due, now=now, reason=WITHDRAWN_BECAUSE_GRANT_ENDED, job=job)
        total += len(due)
        if len(due) < batch_size:
            return total
