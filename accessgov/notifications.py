"""Email (text + HTML) and Slack-compatible notifications. Called by tasks after commit, with ids.

Each builder returns who to tell and what to say; ``dispatch`` sends it. Sending is at-least-once
(the task retries with backoff on failure).
"""

import json
import logging
import urllib.request
from dataclasses import dataclass, field

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.urls import reverse

from accessgov import permissions
from accessgov.models import AccessRequest, BreakGlassFollowUp, Eligibility, Grant, ReviewCampaign, System, User
from accessgov.policies import format_duration

logger = logging.getLogger("accessgov.notifications")


@dataclass
class Message:
    subject: str
    heading: str
    lines: list[str]
    recipients: set[User]
    action_url: str = ""
    action_label: str = "Open in AccessGov"
    slack_system: System | None = None
    extra: dict = field(default_factory=dict)


def absolute(path: str) -> str:
    return settings.PORTAL_URL.rstrip("/") + path


def _request_url(access_request: AccessRequest) -> str:
    return absolute(reverse("request_detail", args=[access_request.pk]))


def _who(user: User) -> str:
    return user.get_full_name() or user.get_username()


def request_submitted(access_request: AccessRequest) -> Message:
    role = access_request.role
    return Message(
        subject=f"[AccessGov] {_who(access_request.requester)} requests {role}",
        heading=f"{_who(access_request.requester)} requests {role}",
        lines=[
            f"Duration: {format_duration(access_request.requested_duration)}",
            f"Why: {access_request.justification}",
            f"Ticket: {access_request.ticket or '—'}",
            f"Risk: {role.get_risk_tier_display()} · approvals needed: {max(1, role.approvals_required)}",
            f"Decide before {access_request.lapses_at:%Y-%m-%d %H:%M} UTC, or it lapses.",
        ],
        recipients=permissions.approvers_for_role(role) - {access_request.requester},
        action_url=_request_url(access_request),
        action_label="Review the request",
        slack_system=role.system,
    )


def request_reminder(access_request: AccessRequest) -> Message:
    message = request_submitted(access_request)
    decided = set(access_request.decisions.values_list("approver_id", flat=True))
    message.recipients = {u for u in message.recipients if u.pk not in decided}
    message.subject = f"[AccessGov] Reminder: {message.subject.removeprefix('[AccessGov] ')}"
    message.heading = f"Still waiting: {message.heading}"
    message.slack_system = None
    return message


def request_approval_progress(access_request: AccessRequest) -> Message:
    done = access_request.decisions.filter(outcome="approve").count()
    return Message(
        subject=f"[AccessGov] {done} of {access_request.role.approvals_required} approvals for {access_request.role}",
        heading=f"Your request for {access_request.role} has {done} of {access_request.role.approvals_required} approvals",
        lines=["Another approver still has to decide."],
        recipients={access_request.requester},
        action_url=_request_url(access_request),
    )


def request_decided(access_request: AccessRequest) -> Message:
    role = access_request.role
    if access_request.status == AccessRequest.Status.APPROVED:
        grant = (
            access_request.grant
            if access_request.kind != AccessRequest.Kind.EXTENSION
            else access_request.extends_grant
        )
        lines = [f"Access until {grant.expires_at:%Y-%m-%d %H:%M} UTC."]
        if access_request.auto_approved_by_rule:
            lines.append(f"Approved automatically ({access_request.auto_approved_by_rule}).")
        heading = f"Approved: {role}"
    else:
        lines = [f"{_who(d.approver)}: {d.comment}" for d in access_request.decisions.filter(outcome="deny")]
        heading = f"Denied: {role}"
    return Message(
        subject=f"[AccessGov] {heading}",
        heading=heading,
        lines=lines,
        recipients={access_request.requester},
        action_url=_request_url(access_request),
    )


def request_lapsed(access_request: AccessRequest) -> Message:
    return Message(
        subject=f"[AccessGov] Lapsed: {access_request.role}",
        heading=f"Your request for {access_request.role} lapsed",
        lines=["No approver decided in time. Ask again if you still need access."],
        recipients={access_request.requester},
        action_url=absolute(reverse("request_new")),
        action_label="Request access",
    )


def request_withdrawn(access_request: AccessRequest) -> Message:
    """The requester and the role's approvers learn why a pending request left the queue."""
    reason = (
        access_request.events.filter(event_type="request.withdrawn").values_list("reason", flat=True).last()
        or "The requester is no longer eligible for this role."
    )
    return Message(
        subject=f"[AccessGov] Withdrawn: {_who(access_request.requester)}'s request for {access_request.role}",
        heading=f"{_who(access_request.requester)}'s request for {access_request.role} was withdrawn",
        lines=[reason, "Nothing was granted; nothing is left to decide."],
        recipients=(permissions.approvers_for_role(access_request.role) | {access_request.requester}),
        action_url=_request_url(access_request),
    )


def grant_expiring(grant: Grant) -> Message:
    return Message(
        subject=f"[AccessGov] Your access to {grant.role} ends at {grant.expires_at:%H:%M} UTC",
        heading=f"Your access to {grant.role} ends soon",
        lines=[f"It ends at {grant.expires_at:%Y-%m-%d %H:%M} UTC. Extend it if you still need it."],
        recipients={grant.user},
        action_url=absolute(reverse("my_access")),
        action_label="Extend or release",
    )


def grant_ended(grant: Grant) -> Message:
    how = {
        Grant.EndReason.EXPIRED: "expired",
        Grant.EndReason.RELEASED: "was released",
        Grant.EndReason.REVOKED: f"was revoked by {_who(grant.ended_by) if grant.ended_by else 'an approver'}",
    }.get(grant.end_reason, "ended")
    return Message(
        subject=f"[AccessGov] Your access to {grant.role} {how}",
        heading=f"Your access to {grant.role} {how}",
        lines=[f"Ended at {grant.ended_at:%Y-%m-%d %H:%M} UTC."],
        recipients={grant.user},
        action_url=absolute(reverse("my_access")),
    )


def break_glass_activated(grant: Grant) -> Message:
    role = grant.role
    return Message(
        subject=f"[AccessGov] BREAK-GLASS: {_who(grant.user)} activated {role}",
        heading=f"Break-glass: {_who(grant.user)} activated {role}",
        lines=[
            f"Until {grant.expires_at:%Y-%m-%d %H:%M} UTC.",
            f"Reason: {grant.access_request.justification}",
            "Another person must review and acknowledge it within 24 hours.",
        ],
        recipients=(
            permissions.approvers_for_role(role) | permissions.auditors() | permissions.owners_of_system(role.system)
        )
        - {grant.user},
        action_url=absolute(reverse("break_glass_follow_ups")),
        action_label="Review the follow-up",
        slack_system=role.system,
    )


def break_glass_overdue(follow_up: BreakGlassFollowUp) -> Message:
    message = break_glass_activated(follow_up.grant)
    message.subject = f"[AccessGov] OVERDUE break-glass review: {follow_up.grant.role}"
    message.heading = f"Overdue: nobody has reviewed the break-glass use of {follow_up.grant.role}"
    return message


def removal_overdue(grant: Grant) -> Message:
    system = grant.role.system
    return Message(
        subject=f"[AccessGov] ALERT: access to {grant.role} not removed for {grant.user.get_username()}",
        heading=f"Access to {grant.role} has not been removed at the target",
        lines=[
            f"{_who(grant.user)}'s access ended at {grant.ended_at:%Y-%m-%d %H:%M} UTC; removal was requested at "
            f"{grant.removal_requested_at:%H:%M} UTC and is not confirmed.",
            f"Last error: {grant.provisioning_error or '—'}",
            "AccessGov keeps retrying. Check the target, or remove the access by hand and mark it done.",
        ],
        recipients=permissions.owners_of_system(system) | permissions.auditors(),
        action_url=absolute(reverse("provisioning")),
        action_label="Open the provisioning dashboard",
        slack_system=system,
    )


def _review_url(campaign: ReviewCampaign) -> str:
    return absolute(reverse("review_detail", args=[campaign.pk]))


def _reviewers(campaign: ReviewCampaign, *, open_only: bool) -> set[User]:
    items = campaign.items.filter(reviewer__isnull=False)
    if open_only:
        items = items.filter(decision="")
    return set(User.objects.filter(pk__in=items.values("reviewer_id")))


def _no_response_line(campaign: ReviewCampaign) -> str:
    if campaign.no_response == ReviewCampaign.NoResponse.REVOKE:
        return "Access nobody confirms is revoked when the review closes."
    return "Access nobody answers for is kept but flagged in the evidence when the review closes."


def review_started(campaign: ReviewCampaign) -> Message:
    return Message(
        subject=f"[AccessGov] Access review started: {campaign.name}",
        heading=f"Please review access: {campaign.name}",
        lines=[
            f"You have items to keep or revoke, due {campaign.due_at:%Y-%m-%d %H:%M} UTC.",
            _no_response_line(campaign),
        ],
        recipients=_reviewers(campaign, open_only=False),
        action_url=_review_url(campaign),
        action_label="Open your work list",
    )


def review_half_time(campaign: ReviewCampaign) -> Message:
    return Message(
        subject=f"[AccessGov] Access review at half time: {campaign.name}",
        heading=f"Half the time is gone: {campaign.name}",
        lines=[
            f"You still have unanswered items, due {campaign.due_at:%Y-%m-%d %H:%M} UTC.",
            _no_response_line(campaign),
        ],
        recipients=_reviewers(campaign, open_only=True),
        action_url=_review_url(campaign),
        action_label="Open your work list",
    )


def review_overdue(campaign: ReviewCampaign) -> Message:
    return Message(
        subject=f"[AccessGov] OVERDUE access review: {campaign.name}",
        heading=f"Overdue: {campaign.name}",
        lines=[
            f"The due date ({campaign.due_at:%Y-%m-%d %H:%M} UTC) has passed with items unanswered.",
            f"The review closes itself at {campaign.closes_at:%Y-%m-%d %H:%M} UTC. {_no_response_line(campaign)}",
        ],
        recipients=_reviewers(campaign, open_only=True) | permissions.auditors(),
        action_url=_review_url(campaign),
        action_label="Open the review",
    )


def eligibility_ending(eligibility: Eligibility) -> Message:
    role = eligibility.role
    subject = eligibility.user.get_username() if eligibility.user else f"group {eligibility.group.name}"
    return Message(
        subject=f"[AccessGov] Eligibility of {subject} for {role} ends {eligibility.ends_at:%Y-%m-%d}",
        heading=f"Eligibility for {role} is about to end",
        lines=[
            f"{subject} may request {role} until {eligibility.ends_at:%Y-%m-%d %H:%M} UTC; after that, new "
            "requests are refused.",
            "To keep it, add a new eligibility with a later end date on the system page.",
        ],
        recipients=permissions.owners_of_system(role.system),
        action_url=absolute(reverse("system_detail", args=[role.system.slug])),
        action_label="Open the system",
        slack_system=role.system,
    )


BUILDERS = {
    "request_submitted": (AccessRequest, request_submitted),
    "request_reminder": (AccessRequest, request_reminder),
    "request_approval_progress": (AccessRequest, request_approval_progress),
    "request_decided": (AccessRequest, request_decided),
    "request_lapsed": (AccessRequest, request_lapsed),
    "request_withdrawn": (AccessRequest, request_withdrawn),
    "grant_expiring": (Grant, grant_expiring),
    "grant_ended": (Grant, grant_ended),
    "break_glass_activated": (Grant, break_glass_activated),
    "break_glass_overdue": (BreakGlassFollowUp, break_glass_overdue),
    "removal_overdue": (Grant, removal_overdue),
    "review_started": (ReviewCampaign, review_started),
    "review_half_time": (ReviewCampaign, review_half_time),
    "review_overdue": (ReviewCampaign, review_overdue),
    "eligibility_ending": (Eligibility, eligibility_ending),
}


def build(kind: str, object_id: int) -> Message | None:
    model, builder = BUILDERS[kind]
    obj = model.objects.filter(pk=object_id).first()
    return builder(obj) if obj is not None else None


def one_line(text: str) -> str:
    """A header value on one line: user text (a role name, a person's name) never adds header lines."""
    return " ".join(text.split())


def slack_escape(text: str) -> str:
    """Slack reads ``<…>`` as links and mentions (``<!channel>``, ``<https://x|Approve>``): user text
    must show as typed, so & < > are escaped the way Slack's message format asks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def send_email(message: Message) -> int:
    sent = 0
    context = {
        "subject": message.subject,
        "heading": message.heading,
        "lines": message.lines,
        "action_url": message.action_url,
        "action_label": message.action_label,
    }
    text = render_to_string("emails/notification.txt", context)
    html = render_to_string("emails/notification.html", context)
    for user in sorted(message.recipients, key=lambda u: u.pk):
        if not user.email or not user.is_active:
            continue
        email = EmailMultiAlternatives(one_line(message.subject), text, settings.DEFAULT_FROM_EMAIL, [user.email])
        email.attach_alternative(html, "text/html")
        email.send()
        sent += 1
    return sent


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def send_slack(message: Message) -> bool:
    system = message.slack_system
    if system is None or not system.slack_webhook_url:
        return False
    body = {
        "text": f"*{slack_escape(message.heading)}*\n"
        + "\n".join(slack_escape(line) for line in message.lines)
        + (f"\n<{message.action_url}|Open>" if message.action_url else "")
    }
    request = urllib.request.Request(  # noqa: S310 - https URL configured by an admin
        system.slack_webhook_url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    opener = urllib.request.build_opener(_NoRedirect)
    with opener.open(request, timeout=5) as response:
        if response.status >= 300:
            raise RuntimeError(f"Slack webhook answered {response.status}")
    return True


def dispatch(kind: str, object_id: int) -> int:
    """Send the notification ``kind`` about object ``object_id``; returns emails sent."""
    message = build(kind, object_id)
    if message is None:
        return 0
    sent = send_email(message)
    send_slack(message)
    logger.info("notification %s #%s: %d emails", kind, object_id, sent)
    return sent
