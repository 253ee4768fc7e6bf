"""Building grant histories at fixed instants for the report and evidence tests."""

from datetime import datetime, timedelta

import time_machine
from django.utils import timezone

from accessgov.models import Grant, OutboxItem
from accessgov.services import access_requests as ar
from accessgov.services import grants as gs
from accessgov.services.provisioning import manual_task_complete
from tests.support.requests import submit

H = timedelta(hours=1)


MIN = timedelta(minutes=1)


JUSTIFICATION = "Investigating incident INC-42 on payments"


def at(moment: datetime):
    return time_machine.travel(moment, tick=False)


def granted(w, when, *, role=None, approver=None, decide_after=MIN, user=None, **kwargs) -> Grant:
    with at(when):
        access_request = submit(w, role=role, user=user, **kwargs)
    if not access_request.is_pending:  # auto-approved
        return Grant.objects.get(access_request=access_request)
    first = approver or w.approver
    with at(when + decide_after):
        ar.access_request_approve(first, access_request.pk)
        access_request.refresh_from_db()
        if access_request.is_pending:  # a role that needs two approvals
            ar.access_request_approve(w.approver2 if first != w.approver2 else w.approver, access_request.pk)
    return Grant.objects.get(access_request=access_request)


def expired(grant: Grant) -> Grant:
    with at(grant.expires_at + timedelta(seconds=5)):
        gs.grant_expire_due(timezone.now(), grant_ids=[grant.pk])
    grant.refresh_from_db()
    return grant


def removal_confirmed(grant: Grant, by, after: timedelta) -> Grant:
    item = OutboxItem.objects.get(grant=grant, action=OutboxItem.Action.REMOVE)
    with at(grant.ended_at + after):
        manual_task_complete(by, item.pk)
    grant.refresh_from_db()
    return grant


def acknowledged(grant: Grant, by, when: datetime, comment="Checked the session log") -> Grant:
    with at(when):
        gs.break_glass_acknowledge(by, grant.follow_up.pk, comment=comment)
    grant.refresh_from_db()
    return grant
