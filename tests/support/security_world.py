"""A world in which every free-text field a person can set holds hostile text.

Used by the URL crawl, the header and escaping tests (the ``hostile`` fixture, registered in
tests/conftest.py) and the browser test (``build``). Each field gets its own payload
(``payload("justification")`` …) so a failure names the field; every payload starts like a spreadsheet
formula and carries the classic script, attribute-breaking and ``javascript:`` injections.
"""

from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from accessgov.models import AccessRequest, ReviewItem
from accessgov.services import access_requests, eligibility, grants, reviews
from tests.support.factories import RoleFactory

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
IMG_TAG = "<img src=x onerror"  # the part of IMG that is an element if it reaches HTML unescaped
JS_URL = "javascript:alert(1)"


def payload(field: str) -> str:
    """Hostile text for ``field``: a formula, a script, an attribute break-out and a javascript: URL
    (at most 100 characters, the shortest text column it goes into)."""
    return f"={field} {SCRIPT} {IMG} {JS_URL}"


def marker(field: str) -> str:
    """The start of a field's payload as typed: enough to find it even where a page shortens text."""
    return f"={field} {SCRIPT}"


def escaped(field: str) -> str:
    """How ``payload(field)`` must look in HTML: Django's escaping of & < > " '."""
    from django.utils.html import escape

    return escape(payload(field))


# Fields and the code that sets them (the people who can: requester, approver, owner, auditor, admin).
FIELDS = [
    "requester first name",
    "requester last name",
    "approver first name",
    "approver last name",
    "system name",
    "system description",
    "role name",
    "role description",
    "justification",
    "ticket",
    "approval comment",
    "denial comment",
    "revocation reason",
    "break-glass reason",
    "follow-up comment",
    "eligibility reason",
    "review name",
    "review comment",
]


@dataclass
class HostileWorld:
    pending: AccessRequest
    approved: AccessRequest
    denied: AccessRequest
    revoked: AccessRequest
    break_glass_grant_id: int
    follow_up_id: int
    campaign_id: int
    admin: object


def build(world, make_user) -> HostileWorld:
    """Fill ``world`` (tests.conftest) with hostile text, every state created through the services.
    Call inside ``django_capture_on_commit_callbacks(execute=True)`` to also send the emails."""
    now = timezone.now()
    for user, who in ((world.requester, "requester"), (world.approver, "approver")):
        user.first_name = payload(f"{who} first name")
        user.last_name = payload(f"{who} last name")
        user.save(update_fields=["first_name", "last_name"])
    # Set by a portal admin in the admin (reference data, not state).
    world.system.name = payload("system name")
    world.system.description = payload("system description")
    world.system.save()
    world.role.name = payload("role name")
    world.role.description = payload("role description")
    world.role.save()
    emergency = RoleFactory(system=world.system, name="break-glass admin", break_glass_allowed=True)

    eligibility.eligibility_add(world.owner, role=world.role, user=world.outsider, reason=payload("eligibility reason"))
    eligibility.eligibility_add(world.owner, role=emergency, user=world.requester, reason="on-call")

    def submit_hostile(role, field="justification"):
        return access_requests.access_request_submit(
            world.requester,
            role=role,
            duration=timedelta(minutes=30),
            justification=payload(field),
            ticket=payload("ticket"),
        )

    approved = submit_hostile(world.role)
    access_requests.access_request_approve(world.approver, approved.pk, comment=payload("approval comment"))
    revoked = submit_hostile(world.role_two)
    access_requests.access_request_approve(world.approver, revoked.pk, comment="first of two", step_up_at=now)
    access_requests.access_request_approve(world.approver2, revoked.pk, comment="second", step_up_at=now)
    revoked.refresh_from_db()
    grants.grant_revoke(world.approver, revoked.grant.pk, reason=payload("revocation reason"))
    denied = access_requests.access_request_submit(
        world.outsider, role=world.role, duration=timedelta(minutes=30), justification=payload("justification")
    )
    access_requests.access_request_deny(world.approver, denied.pk, comment=payload("denial comment"))
    pending = submit_hostile(world.role_two)

    break_glass = grants.break_glass_activate(
        world.requester,
        role=emergency,
        justification=payload("break-glass reason"),
        duration=timedelta(minutes=30),
        step_up_at=now,
    )
    follow_up = break_glass.follow_up
    grants.grant_release(world.requester, break_glass.pk)  # a use is acknowledged once it has ended
    grants.break_glass_acknowledge(world.auditor, follow_up.pk, comment=payload("follow-up comment"))

    campaign = reviews.review_campaign_create(
        world.auditor, name=payload("review name"), systems=[world.system], due_at=now + timedelta(days=14)
    )
    item = (
        ReviewItem.objects.filter(campaign=campaign, reviewer__isnull=False).exclude(subject_user=world.owner).first()
    )
    reviews.review_item_decide(item.reviewer, item.pk, decision="keep", comment=payload("review comment"))

    admin = make_user("admin", is_staff=True, is_superuser=True)
    for access_request in (pending, approved, denied, revoked):
        access_request.refresh_from_db()
    return HostileWorld(
        pending=pending,
        approved=approved,
        denied=denied,
        revoked=revoked,
        break_glass_grant_id=break_glass.pk,
        follow_up_id=follow_up.pk,
        campaign_id=campaign.pk,
        admin=admin,
    )


@pytest.fixture
def hostile(world, make_user, django_capture_on_commit_callbacks) -> HostileWorld:
    """The hostile world built on ``world``, its emails sent: ``mail.outbox`` holds only the mails it caused."""
    mail.outbox = []
    with django_capture_on_commit_callbacks(execute=True):
        return build(world, make_user)
