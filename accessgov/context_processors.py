from django.conf import settings
from django.http import HttpRequest

from accessgov import clock, drafts, inbox, permissions, selectors
from accessgov.models import ChangeRequest


def portal(request: HttpRequest) -> dict:
    """Navigation by persona, computed once per page (a few cheap queries, only when signed in)."""
    user = getattr(request, "user", None)
    # A user set by an API token (DRF) has no is_verified (no OTP middleware ran for it): such a user
    # is not a verified portal session, and an error page rendered for an API call must not fail on it.
    is_verified = getattr(user, "is_verified", None)
    verified = bool(user and user.is_authenticated and is_verified is not None and is_verified())
    if not verified:
        return {"nav": {"verified": False}}
    kept_draft = drafts.for_page(request)
    decidable = permissions.decidable_role_ids(user)
    approver = bool(decidable)
    auditor = permissions.is_auditor(user)
    now = clock.now()
    queue_size = selectors.approver_queue_size(user, now, decidable) if approver else 0
    pending_changes = _pending_changes(user)
    return {
        "nav": {
            "verified": True,
            "groups": permissions.scope(user).group_names,
            "is_staff": user.is_staff,
            "pending_changes": pending_changes,
            "approver": approver,
            "auditor": auditor,
            "queue_size": queue_size,
            # Issue 18: the inbox badge (what needs me + unread "what happened"), one more query.
            "inbox": inbox.badge_counts(user, now, queue_size=queue_size, pending_changes=pending_changes),
            "sees_grants": permissions.sees_grant_list(user),
            # The idle timeout, for the warning before it (accessgov.js, WCAG 2.2.1).
            "idle_seconds": int(settings.SESSION_IDLE_TIMEOUT.total_seconds()),
        },
        "kept_draft": kept_draft,
    }


def _pending_changes(user) -> int:
    if not permissions.can_manage_changes(user):
        return 0
    return ChangeRequest.objects.filter(status=ChangeRequest.Status.PENDING).exclude(proposed_by=user).count()
