from django.http import HttpRequest
from django.utils import timezone


def portal(request: HttpRequest) -> dict:
    """Navigation by persona, computed once per page (a few cheap queries, only when signed in)."""
    user = getattr(request, "user", None)
    verified = bool(user and user.is_authenticated and user.is_verified())
    if not verified:
        return {"nav": {"verified": False}}
    from accessgov import permissions, selectors

    decidable = permissions.decidable_role_ids(user)
    approver = bool(decidable)
    return {
        "nav": {
            "verified": True,
            "groups": set(user.groups.values_list("name", flat=True)),
            "is_staff": user.is_staff,
            "pending_changes": _pending_changes(user),
            "approver": approver,
            "auditor": permissions.is_auditor(user),
            "queue_size": selectors.approver_queue_size(user, timezone.now(), decidable) if approver else 0,
            "sees_grants": approver
            or permissions.is_auditor(user)
            or user.has_perm("accessgov.own_system")
            or _owns_any(user),
        }
    }


def _owns_any(user) -> bool:
    from guardian.shortcuts import get_objects_for_user

    return get_objects_for_user(user, "accessgov.own_system", accept_global_perms=False).exists()


def _pending_changes(user) -> int:
    if not user.is_staff:
        return 0
    from accessgov.models import ChangeRequest

    return ChangeRequest.objects.filter(status=ChangeRequest.Status.PENDING).exclude(proposed_by=user).count()
