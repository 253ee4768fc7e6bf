from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from accessgov import clock, inbox, otp, permissions, selectors
from accessgov.http import PortalRequest


@require_safe
def home_view(request: PortalRequest) -> HttpResponse:
    """My active access with countdowns, my pending requests, and (approvers) the queue size."""
    now = clock.now()
    user_id = request.user.pk
    active_grants = selectors.MY_ACTIVE_GRANTS.list(user_id=user_id, now=now)
    needs_me = inbox.needs_me(request.user, now, active_grants=active_grants)
    context = {
        "active_grants": active_grants,
        "scheduled_grants": selectors.MY_SCHEDULED_GRANTS.list(user_id=user_id, now=now),
        "pending_requests": selectors.MY_PENDING_REQUESTS.list(user_id=user_id, now=now),
        "backup_codes_left": otp.backup_codes_left(request.user),
        # Issue 18: what needs me (review work for owners, break-glass uses, changes), as in the inbox.
        "needs_me": needs_me,
        "break_glass_roles": permissions.may_break_glass(request.user, now),
        "overdue_follow_ups": selectors.overdue_follow_up_count(request.user, now),
        # Someone else's grants only (counted by needs_me, and only for those who oversee a role).
        "overdue_removals": needs_me.removals,
    }
    return render(request, "accessgov/home.html", context)
