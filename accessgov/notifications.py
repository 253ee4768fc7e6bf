"""Email (text + HTML) and Slack-compatible notifications. Called by tasks after commit, with ids.

Each builder returns who to tell and what to say; ``dispatch`` sends it: one delivery per channel
(an email per person, the system's Slack post), each recorded, sent and retried on its own, so a
failing channel never makes another one send twice.
"""

import json
import logging
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db.models import F, Q
from django.template.loader import render_to_string

from accessgov import clock, inbox, inputs, net, permissions, recovery, selectors
from accessgov.models import (
    AccessEvent,
    AccessRequest,
    BreakGlassFollowUp,
    ChangeRequest,
    Eligibility,
    Grant,
    NotificationDelivery,
    ReviewCampaign,
    SlackUserLink,
    SlackWorkspace,
    System,
    User,
)
from accessgov.policies import format_duration
from accessgov.services import after_commit

logger = logging.getLogger("accessgov.notifications")

# An instant in a notification is written by ``at`` between two invisible separators and shown in each
# recipient's own time zone when their email is rendered (``in_zone``; UTC for people without a zone). A Slack
# post is read by a whole channel: its instants become Slack's date tokens, which every reader's Slack shows in
# their own zone, with the UTC text for a client that cannot (``_slack_dates``). The text around it is the same
# for everyone.
_MARK = "\u2063"
_INSTANT = re.compile(_MARK + r"([0-9T:+.\-]{19,40})(\|time)?" + _MARK)


def at(instant: datetime, *, time_only: bool = False) -> str:
    """``instant`` as "2026-12-08 09:00 CET" (or "09:00 CET") in whoever reads it."""
    return f"{_MARK}{instant.astimezone(UTC).isoformat()}{'|time' if time_only else ''}{_MARK}"


def _localized(text: str, zone: tzinfo) -> str:
    def shown(match: re.Match) -> str:
        try:
            local = datetime.fromisoformat(match.group(1)).astimezone(zone)
        except ValueError:  # not one ``at`` wrote (someone typed the separators): shown as typed, without them
            return match.group(1)
        return f"{local:%H:%M} {local.tzname()}" if match.group(2) else f"{local:%Y-%m-%d %H:%M} {local.tzname()}"

    return _INSTANT.sub(shown, text)


def _slack_dates(text: str) -> str:
    """``text`` (already escaped for Slack) with each instant as Slack's ``<!date^…>``: the reader's own date
    and time, or the UTC text as the fallback."""

    def token(match: re.Match) -> str:
        try:
            instant = datetime.fromisoformat(match.group(1))
        except ValueError:
            return match.group(1)
        shown = "{time}" if match.group(2) else "{date_num} {time}"
        return f"<!date^{int(instant.timestamp())}^{shown}|{_localized(match.group(0), UTC)}>"

    return _INSTANT.sub(token, text)


def in_zone(message: "Message", zone: tzinfo) -> "Message":
    """``message`` with its instants written in ``zone``."""
    return replace(
        message,
        subject=_localized(message.subject, zone),
        heading=_localized(message.heading, zone),
        lines=[_localized(line, zone) for line in message.lines],
    )


def zone_of(user: User | None) -> tzinfo:
    """The person's time zone (their profile's), or UTC."""
    return (inputs.zone_named(user.time_zone) if user is not None else None) or UTC


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


def _happened_url(user: User, *, access_request_id: int | None = None, grant_id: int | None = None) -> str:
    """The person's inbox item about this request or grant (the newest), or their inbox."""
    event_id = inbox.latest_happened_id(user, access_request_id=access_request_id, grant_id=grant_id)
    return inbox.item_url(event_id)


def _who(user: User) -> str:
    return user.get_full_name() or user.get_username()


def _extended(access_request: AccessRequest) -> Grant | None:
    """The grant an extension request asks to extend; None for any other request."""
    if access_request.kind != AccessRequest.Kind.EXTENSION:
        return None
    return access_request.extends_grant


def _extension_of(grant: Grant) -> str:
    """How an extension's messages name what it extends: "Payments DB · read-write (grant #12)"."""
    return f"{grant.role} (grant #{grant.pk})"


def _end_now(grant: Grant, *, runs: str = "now ends") -> str:
    """The grant's end as it stands, in the recipient's zone: "now ends at …" (``runs``) while it has not ended,
    else "ended at … (revoked)"."""
    ended_at = grant.ended_at_as_of(clock.now())
    if ended_at is None:
        return f"{runs} at {at(grant.expires_at)}"
    return f"ended at {at(ended_at)} ({grant.end_description().lower() if grant.end_reason else 'expired'})"


def request_submitted(access_request: AccessRequest) -> Message:
    role = access_request.role
    grant = _extended(access_request)
    duration = format_duration(access_request.requested_duration)
    if grant is not None:
        # An extension reads as one: which grant, its end now and its end if approved (never as a new request).
        what = f"asks to extend {_extension_of(grant)} by {duration}"
        timing = [
            f"Extension of grant #{grant.pk}, which {_end_now(grant)}.",
            f"If approved, it ends at {at(grant.expires_at + access_request.requested_duration)} "
            f"({duration} more; an approver may allow less).",
        ]
    else:
        what = f"requests {role}"
        timing = [
            f"Duration: {duration}",
            f"Starts: {at(access_request.starts_at)} (scheduled)"
            if access_request.starts_at
            else "Starts: when approved",
        ]
    return Message(
        subject=f"[AccessGov] {_who(access_request.requester)} {what}",
        heading=f"{_who(access_request.requester)} {what}",
        lines=[
            *timing,
            f"Why: {access_request.justification}",
            f"Ticket: {access_request.ticket or '—'}",
            f"Risk: {role.get_risk_tier_display()} · approvals needed: {max(1, role.approvals_required)}",
            f"Decide before {at(access_request.lapses_at)}, or it lapses.",
        ],
        recipients=permissions.approvers_for_role(role) - {access_request.requester},
        action_url=inbox.inbox_url(f"request-{access_request.pk}"),
        action_label="Review the extension" if grant is not None else "Review the request",
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
    grant = _extended(access_request)
    what = f"the extension of {_extension_of(grant)}" if grant is not None else str(access_request.role)
    yours = f"Your extension of {_extension_of(grant)}" if grant is not None else f"Your request for {what}"
    return Message(
        subject=f"[AccessGov] {done} of {access_request.role.approvals_required} approvals for {what}",
        heading=f"{yours} has {done} of {access_request.role.approvals_required} approvals",
        lines=["Another approver still has to decide."],
        recipients={access_request.requester},
        action_url=_happened_url(access_request.requester, access_request_id=access_request.pk),
    )


def _extension_moved(access_request: AccessRequest, grant: Grant) -> list[str]:
    """What an approved extension did to its grant's end, from its grant.extended event (the grant may have
    changed since: extended again, or ended)."""
    data = (
        access_request.events.filter(event_type=AccessEvent.Type.GRANT_EXTENDED).values_list("data", flat=True).last()
    )
    try:
        previous = datetime.fromisoformat(data["previous_expires_at"])
        moved_to = datetime.fromisoformat(data["expires_at"])
    except (TypeError, KeyError, ValueError):
        return [f"Grant #{grant.pk} {_end_now(grant)}."]
    lines = [f"Grant #{grant.pk} now ends at {at(moved_to)} instead of {at(previous)}."]
    if grant.ended_at_as_of(clock.now()) is not None or grant.expires_at != moved_to:
        lines.append(f"Since then it {_end_now(grant)}.")
    return lines


def request_decided(access_request: AccessRequest) -> Message:
    role = access_request.role
    extended = _extended(access_request)
    if access_request.status == AccessRequest.Status.APPROVED:
        grant = access_request.grant if extended is None else extended
        lines = (
            [f"Access until {at(grant.expires_at)}."]
            if extended is None
            else _extension_moved(access_request, extended)
        )
        if access_request.auto_approved_by_rule:
            lines.append(f"Approved automatically ({access_request.auto_approved_by_rule}).")
        for decision in access_request.decisions.filter(outcome="approve").select_related("approver"):
            if decision.duration and decision.duration < access_request.requested_duration:
                lines.append(
                    f"{_who(decision.approver)} approved {format_duration(decision.duration)} of the "
                    f"{format_duration(access_request.requested_duration)} you asked for."
                )
            if decision.comment:
                lines.append(f"{_who(decision.approver)}: {decision.comment}")
        heading = f"Approved: {role}" if extended is None else f"Extension approved: {_extension_of(extended)}"
    else:
        lines = [f"{_who(d.approver)}: {d.comment}" for d in access_request.decisions.filter(outcome="deny")]
        heading = f"Denied: {role}"
        if extended is not None:
            # Denying more time takes nothing away: say the access stands as it was.
            heading = f"Extension denied: {_extension_of(extended)}"
            lines += _extension_not_given(access_request, extended)
    return Message(
        subject=f"[AccessGov] {heading}",
        heading=heading,
        lines=lines,
        recipients={access_request.requester},
        action_url=_happened_url(access_request.requester, access_request_id=access_request.pk),
    )


def _extension_not_given(access_request: AccessRequest, grant: Grant) -> list[str]:
    """For an extension denied or lapsed: the grant was not extended, its end as it stands, and what was asked."""
    return [
        f"Grant #{grant.pk} was not extended: it {_end_now(grant, runs='still ends')}.",
        f"Asked for: {format_duration(access_request.requested_duration)} more.",
    ]


def request_lapsed(access_request: AccessRequest) -> Message:
    grant = _extended(access_request)
    if grant is not None:
        return Message(
            subject=f"[AccessGov] Extension lapsed: {_extension_of(grant)}",
            heading=f"Your request to extend {_extension_of(grant)} lapsed",
            lines=[
                "No approver decided in time.",
                *_extension_not_given(access_request, grant),
                "Ask again for more time if you still need it.",
            ],
            recipients={access_request.requester},
            action_url=_happened_url(access_request.requester, access_request_id=access_request.pk),
            action_label="See it in your inbox",
        )
    return Message(
        subject=f"[AccessGov] Lapsed: {access_request.role}",
        heading=f"Your request for {access_request.role} lapsed",
        lines=["No approver decided in time. Ask again if you still need access."],
        recipients={access_request.requester},
        action_url=_happened_url(access_request.requester, access_request_id=access_request.pk),
        action_label="See it in your inbox",
    )


def request_withdrawn(access_request: AccessRequest) -> Message:
    """The requester and the role's approvers learn why a pending request left the queue."""
    reason = (
        access_request.events.filter(event_type="request.withdrawn").values_list("reason", flat=True).last()
        or "The requester is no longer eligible for this role."
    )
    grant = _extended(access_request)
    what = f"extension of {_extension_of(grant)}" if grant is not None else f"request for {access_request.role}"
    return Message(
        subject=f"[AccessGov] Withdrawn: {_who(access_request.requester)}'s {what}",
        heading=f"{_who(access_request.requester)}'s {what} was withdrawn",
        lines=[reason, "Nothing was granted; nothing is left to decide."],
        recipients=(permissions.approvers_for_role(access_request.role) | {access_request.requester}),
        action_url=inbox.inbox_url(),
    )


def grant_expiring(grant: Grant) -> Message:
    return Message(
        subject=f"[AccessGov] Your access to {grant.role} ends at {at(grant.expires_at, time_only=True)}",
        heading=f"Your access to {grant.role} ends soon",
        lines=[f"It ends at {at(grant.expires_at)}. Extend it if you still need it."],
        recipients={grant.user},
        action_url=inbox.inbox_url(f"grant-{grant.pk}"),
        action_label="Extend or release",
    )


def _revoked_how(grant: Grant) -> tuple[str, bool]:
    """How a revoked grant ended, by who or what ended it (its end event): a person, an access review, the
    account's deactivation, or another automatic job (with its reason). Also whether that already says why."""
    event = (
        AccessEvent.objects.filter(grant=grant, event_type__in=selectors.GRANT_END_EVENTS)
        .order_by("-pk")
        .values("actor_label", "reason", "data")
        .first()
    ) or {"actor_label": "", "reason": "", "data": {}}
    data = event["data"] if isinstance(event["data"], dict) else {}
    by = f" by {_who(grant.ended_by)}" if grant.ended_by else ""
    if data.get("review_item"):
        name = ReviewCampaign.objects.filter(pk=data.get("campaign")).values_list("name", flat=True).first()
        return f"was revoked in {f'the access review “{name}”' if name else 'an access review'}{by}", False
    if grant.ended_by:
        return f"was revoked{by}", False
    if event["actor_label"] == "system:deactivation":
        return "was revoked: your account was deactivated", False
    if event["reason"]:
        return f"was revoked automatically: {event['reason']}", True
    return "was revoked automatically", False


def grant_ended(grant: Grant) -> Message:
    """The holder learns their access ended, worded by who or what ended it (never a guess such as "an
    approver" for a job's revocation)."""
    told_why = False
    if grant.end_reason == Grant.EndReason.REVOKED:
        how, told_why = _revoked_how(grant)
    else:
        how = {
            Grant.EndReason.EXPIRED: "expired",
            Grant.EndReason.RELEASED: "was cancelled before it started"
            if grant.ended_at is not None and grant.ended_at < grant.starts_at
            else "was released",
            Grant.EndReason.TICKET_CLOSED: "ended: its ticket closed",
            Grant.EndReason.INCIDENT_RESOLVED: "ended: its incident was resolved",
        }.get(grant.end_reason, "ended")
    lines = [f"Ended at {at(grant.ended_at)}."]
    why = selectors.grant_end_reason(grant)
    if why and not told_why:
        lines.append(f"Why: {why}")
    return Message(
        subject=f"[AccessGov] Your access to {grant.role} {how}",
        heading=f"Your access to {grant.role} {how}",
        lines=lines,
        recipients={grant.user},
        action_url=_happened_url(grant.user, grant_id=grant.pk),
        action_label="See what happened",
    )


def break_glass_activated(grant: Grant) -> Message:
    role = grant.role
    return Message(
        subject=f"[AccessGov] BREAK-GLASS: {_who(grant.user)} activated {role}",
        heading=f"Break-glass: {_who(grant.user)} activated {role}",
        lines=[
            f"Until {at(grant.expires_at)}.",
            f"Reason: {grant.access_request.justification}",
            "Another person must review and acknowledge it within 24 hours.",
        ],
        recipients=(
            permissions.approvers_for_role(role) | permissions.auditors() | permissions.owners_of_system(role.system)
        )
        - {grant.user},
        action_url=inbox.inbox_url(f"follow-up-{grant.follow_up.pk}")
        if hasattr(grant, "follow_up")
        else inbox.inbox_url(),
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
            f"{_who(grant.user)}'s access ended at {at(grant.ended_at)}; removal was requested at "
            f"{at(grant.removal_requested_at, time_only=True)} and is not confirmed.",
            f"Last error: {grant.provisioning_error or '—'}",
            (
                f"{system.name} is managed by hand: a person must remove the access there and mark it removed."
                if system.connector == System.Connector.MANUAL
                else "AccessGov keeps retrying. Check the target, or remove the access by hand and mark it done."
            ),
        ],
        recipients=permissions.owners_of_system(system) | permissions.auditors(),
        action_url=inbox.inbox_url("removals"),
        action_label="Open the provisioning dashboard",
        slack_system=system,
    )


def _review_url(campaign: ReviewCampaign) -> str:
    return inbox.inbox_url(f"review-{campaign.pk}")


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
            f"You have items to keep or revoke, due {at(campaign.due_at)}.",
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
            f"You still have unanswered items, due {at(campaign.due_at)}.",
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
            f"The due date ({at(campaign.due_at)}) has passed with items unanswered.",
            f"The review closes itself at {at(campaign.closes_at)}. {_no_response_line(campaign)}",
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
            f"{subject} may request {role} until {at(eligibility.ends_at)}; after that, new requests are refused.",
            "To keep it, add a new eligibility with a later end date on the system page.",
        ],
        recipients=permissions.owners_of_system(role.system),
        action_url=inbox.inbox_url(f"eligibility-{eligibility.pk}"),
        action_label="Open your inbox",
        slack_system=role.system,
    )


def _named(admin: User) -> str:
    """An admin named so that the person can tell which account acted: full name and username."""
    return f"{admin.get_full_name()} ({admin.get_username()})" if admin.get_full_name() else admin.get_username()


def account_recovered(change: ChangeRequest) -> Message | None:
    """Tells the person an approved account recovery happened, who asked and who approved — and, for a recovery
    by link, carries the one-time link to choose a new password (``accessgov.recovery``), built when sent and
    stored nowhere. No link once the password was chosen or the account changed since (a redelivery then
    sends nothing)."""
    payload = change.payload if isinstance(change.payload, dict) else {}
    if change.kind != ChangeRequest.Kind.ACCOUNT_RECOVERY or change.status != ChangeRequest.Status.APPLIED:
        return None
    user = User.objects.filter(pk=payload.get("user_id")).first()
    if user is None or not user.is_active or not user.email:
        return None
    link_to = payload.get("link_to")
    if link_to and (not recovery.awaits_password(user) or user.email != link_to):
        return None

    approved_by = change.decided_by or change.proposed_by
    what = []
    if link_to or payload.get("password"):
        what.append("your password was reset")
    if payload.get("authenticators"):
        what.append("your authenticator app and backup codes were removed")
    lines = [
        f"Your AccessGov account was recovered: {' and '.join(what) or 'it was reset'}. {_named(change.proposed_by)} "
        f"asked for it and {_named(approved_by)} approved it. Every session and API token of yours was ended.",
    ]
    if link_to:
        lines.append(
            f"Choose a new password with the link below. It works once, for {settings.PASSWORD_RESET_TIMEOUT // 3600} "
            "hours. The old password no longer works."
        )
    if payload.get("authenticators"):
        lines.append("After your password, you set up a new authenticator app.")
    lines.append("If you did not ask for this, tell your security team at once.")
    return Message(
        subject="[AccessGov] Choose a new password" if link_to else "[AccessGov] Your account was recovered",
        heading="Choose a new password" if link_to else "Your account was recovered",
        lines=lines,
        recipients={user},
        action_url=absolute(recovery.link_path(user)) if link_to else "",
        action_label="Choose a new password" if link_to else "Open in AccessGov",
    )


def identity_changed(change: ChangeRequest) -> Message | None:
    """Tells the person that an admin changed their username or email address, who proposed and who approved
    it — at the new address and at the former one (which is the one they still read, if this was not their
    wish)."""
    payload = change.payload if isinstance(change.payload, dict) else {}
    if change.kind != ChangeRequest.Kind.USER_IDENTITY or change.status != ChangeRequest.Status.APPLIED:
        return None
    user = User.objects.filter(pk=payload.get("user_id")).first()
    if user is None or not user.is_active:
        return None
    approved_by = change.decided_by or change.proposed_by
    lines = [
        f"{c['label']}: {c['old'] or '(none)'} → {c['new']}." for c in change.changes.values() if isinstance(c, dict)
    ]
    lines.append(f"{_named(change.proposed_by)} asked for it and {_named(approved_by)} approved it.")
    lines.append("If you did not ask for this, tell your security team at once.")
    former = (payload.get("old") or {}).get("email")
    return Message(
        subject="[AccessGov] Your account's details were changed",
        heading="Your account's details were changed",
        lines=lines,
        recipients={user},
        extra={"also_to": [former] if former and former != user.email else []},
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
    # Not in any category below: a person cannot switch it off.
    "account_recovered": (ChangeRequest, account_recovered),
    "identity_changed": (ChangeRequest, identity_changed),
}


# What a person can switch off, per channel (issue 18): each notification kind belongs to one category.
CATEGORIES: dict[str, tuple[str, frozenset[str]]] = {
    "approvals": (
        "Requests waiting for my decision (new, reminders, withdrawn)",
        frozenset({"request_submitted", "request_reminder", "request_withdrawn"}),
    ),
    "my_requests": (
        "My requests (approvals so far, decided, lapsed)",
        frozenset({"request_approval_progress", "request_decided", "request_lapsed"}),
    ),
    "my_access": ("My access (ending soon, ended, revoked)", frozenset({"grant_expiring", "grant_ended"})),
    "break_glass": ("Break-glass use to acknowledge", frozenset({"break_glass_activated", "break_glass_overdue"})),
    "reviews": ("Access reviews I must answer", frozenset({"review_started", "review_half_time", "review_overdue"})),
    "operations": (
        "My systems (access not removed, eligibility ending)",
        frozenset({"removal_overdue", "eligibility_ending"}),
    ),
}
CATEGORY_OF = {kind: name for name, (_, kinds) in CATEGORIES.items() for kind in kinds}
CHANNELS = ("email", "slack")


def wants(user: User, kind: str, channel: str) -> bool:
    """Whether ``user`` wants notification ``kind`` on ``channel`` (everything is on until they say no)."""
    preferences = user.notification_preferences if isinstance(user.notification_preferences, dict) else {}
    category = preferences.get(CATEGORY_OF.get(kind, ""), {})
    return not isinstance(category, dict) or category.get(channel, True) is not False


SLACK_APPROVAL_KINDS = {
    "request_submitted",
    "request_approval_progress",
    "request_decided",
    "request_lapsed",
    "request_withdrawn",
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


def _rendered(message: Message) -> tuple[str, str]:
    context = {
        "subject": message.subject,
        "heading": message.heading,
        "lines": message.lines,
        "action_url": message.action_url,
        "action_label": message.action_label,
    }
    return render_to_string("emails/notification.txt", context), render_to_string("emails/notification.html", context)


def _email_recipients(message: Message, kind: str = "") -> list[User]:
    return [
        u
        for u in sorted(message.recipients, key=lambda u: u.pk)
        if u.email and u.is_active and (not kind or wants(u, kind, "email"))
    ]


def _slack_mentions(message: Message, kind: str) -> list[str]:
    """Slack ids of the recipients who linked their Slack account and want this kind in Slack: the
    system's post mentions them (a post to a channel is the system's, so a person's Slack preference
    decides whether it calls them, not whether it is posted)."""
    wanted = [u.pk for u in message.recipients if u.is_active and wants(u, kind, "slack")]
    if not wanted:
        return []
    return sorted(set(SlackUserLink.objects.filter(user_id__in=wanted).values_list("slack_user_id", flat=True)))


def send_email(
    message: Message, recipient: User, rendered: tuple[str, str] | None = None, *, address: str = ""
) -> None:
    """Email ``message`` (text + HTML) to one person (at ``address`` if given, else their own); raises whatever
    the mail backend raises."""
    text, html = rendered or _rendered(message)
    to = [address or recipient.email]
    email = EmailMultiAlternatives(one_line(message.subject), text, settings.DEFAULT_FROM_EMAIL, to)
    email.attach_alternative(html, "text/html")
    email.send()


class DeliveryFailed(Exception):
    """A notification could not be delivered on one channel (the task retries that channel)."""


def send_slack(message: Message) -> bool:
    """Post ``message`` to its system's Slack-compatible webhook through the outbound guard
    (accessgov.net: https, no internal address unless WEBHOOK_ALLOW_PRIVATE_TARGETS, connecting to
    the address it checked, no redirects). Returns False when there is nothing to post; raises
    DeliveryFailed when the URL is refused, cannot be reached or does not answer 2xx."""
    system = message.slack_system
    if system is None or not system.slack_webhook_url:
        return False
    mentions = " ".join(f"<@{slack_id}>" for slack_id in message.extra.get("slack_mentions", []) if slack_id.isalnum())
    body = {
        "text": f"*{_slack_dates(slack_escape(message.heading))}*\n"
        + "\n".join(_slack_dates(slack_escape(line)) for line in message.lines)
        + (f"\n<{message.action_url}|Open>" if message.action_url else "")
        + (f"\n{mentions}" if mentions else "")
    }
    headers = {"Content-Type": "application/json", "User-Agent": "AccessGov-Notifications/1"}
    try:
        status = net.post(system.slack_webhook_url, json.dumps(body).encode(), headers)
    except net.TargetRefused as exc:
        raise DeliveryFailed(f"The Slack webhook of {system} is refused: {exc}") from None
    except net.TargetUnreachable as exc:
        raise DeliveryFailed(f"The Slack webhook of {system} could not be reached ({exc}).") from None
    if not 200 <= status < 300:
        raise DeliveryFailed(f"The Slack webhook of {system} answered {status}.")
    return True


# --- Delivery: one row per channel, each sent and retried on its own ---------------------------------

# A delivery another run is sending is left alone this long (a worker killed mid-send frees it then).
LEASE = timedelta(minutes=2)
# Delivery rows are kept this long (de-duplication of retries and redeliveries, and a trace of who was told).
KEEP = timedelta(days=7)


class DeliveryPending(Exception):
    """Some deliveries of a notification are not sent yet (failed, or being sent by another run)."""


@dataclass
class Dispatched:
    sent: int = 0
    emails: int = 0
    pending: int = 0
    errors: list[str] = field(default_factory=list)


def _record_deliveries(message: Message, kind: str, object_id: int, notification_id: str, now) -> None:
    """One delivery row per channel of this notification; rows of an earlier run are kept as they are."""

    def email(user: User, address: str = "") -> NotificationDelivery:
        return NotificationDelivery(
            key=f"{notification_id}:email:{user.pk}" + (":former" if address else ""),
            notification_id=notification_id,
            kind=kind,
            object_id=object_id,
            channel=NotificationDelivery.Channel.EMAIL,
            recipient=user,
            address=address,
            created_at=now,
        )

    rows = [email(user) for user in _email_recipients(message, kind)]
    # A former address, told of the change (the recipient is the person; the address is not theirs now).
    rows += [
        email(user, address)
        for user in sorted(message.recipients, key=lambda u: u.pk)
        for address in message.extra.get("also_to", [])[:1]
    ]
    system = message.slack_system
    if system is not None and system.slack_webhook_url:
        rows.append(
            NotificationDelivery(
                key=f"{notification_id}:slack:{system.pk}",
                notification_id=notification_id,
                kind=kind,
                object_id=object_id,
                channel=NotificationDelivery.Channel.SLACK,
                system=system,
                created_at=now,
            )
        )
    if rows:
        NotificationDelivery.objects.bulk_create(rows, ignore_conflicts=True)


def _claim(delivery: NotificationDelivery, now) -> bool:
    """Take the delivery for this run (one UPDATE): False when it is sent, given up, or leased."""
    claimed = (
        NotificationDelivery.objects.filter(pk=delivery.pk, status=NotificationDelivery.Status.PENDING)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lte=now))
        .update(lease_until=now + LEASE, attempts=F("attempts") + 1)
    )
    if claimed:
        delivery.lease_until, delivery.attempts = now + LEASE, delivery.attempts + 1
    return bool(claimed)


def _finish(delivery: NotificationDelivery, error: str, *, last_attempt: bool) -> None:
    """Record one attempt's outcome, only while this run still holds the lease."""
    mine = NotificationDelivery.objects.filter(pk=delivery.pk, lease_until=delivery.lease_until)
    if not error:
        mine.update(status=NotificationDelivery.Status.SENT, sent_at=clock.now(), lease_until=None, last_error="")
        return
    status = NotificationDelivery.Status.FAILED if last_attempt else NotificationDelivery.Status.PENDING
    mine.update(status=status, lease_until=None, last_error=error[:2000])
    logger.warning("notification delivery %s failed (attempt %d): %s", delivery.key, delivery.attempts, error)


def dispatch(kind: str, object_id: int, *, notification_id: str, last_attempt: bool = False) -> Dispatched:
    """Send notification ``kind`` about object ``object_id``, once per channel.

    Called by tasks.notify with the task's id as ``notification_id``. Writes one NotificationDelivery
    per email recipient and one for the system's Slack webhook (the first run; later runs find them),
    then sends each pending one under a lease and records it sent, or its error. A delivery that was
    sent is never sent again, whatever re-runs the task (a retry, a redelivered message, a duplicate
    from notify_many); a failing one does not stop the others. Returns what was sent and what is still
    pending (the task retries those, with backoff); on the ``last_attempt`` a failure is given up."""
    message = build(kind, object_id)
    if message is None:
        return Dispatched()
    now = clock.now()
    NotificationDelivery.objects.filter(created_at__lt=now - KEEP).delete()
    if message.slack_system is not None and message.slack_system.slack_webhook_url:
        message.extra["slack_mentions"] = _slack_mentions(message, kind)
    _record_deliveries(message, kind, object_id, notification_id, now)
    result = Dispatched()
    pending = NotificationDelivery.objects.filter(
        notification_id=notification_id, status=NotificationDelivery.Status.PENDING
    ).select_related("recipient", "system")
    by_zone: dict[str, tuple[Message, tuple[str, str]]] = {}  # each recipient's time zone rendered once
    for delivery in pending.order_by("pk"):
        if not _claim(delivery, clock.now()):
            result.pending += 1
            continue
        try:
            if delivery.channel == NotificationDelivery.Channel.EMAIL:
                zone = zone_of(delivery.recipient)
                if str(zone) not in by_zone:
                    local = in_zone(message, zone)
                    by_zone[str(zone)] = (local, _rendered(local))
                local, rendered = by_zone[str(zone)]
                send_email(local, delivery.recipient, rendered, address=delivery.address)
            else:
                send_slack(message)
        except Exception as exc:  # one channel's failure (SMTP, Slack, a bug) is recorded and retried alone
            error = str(exc) or exc.__class__.__name__
            _finish(delivery, error, last_attempt=last_attempt)
            result.errors.append(f"{delivery.channel}: {error}")
            result.pending += 1
        else:
            _finish(delivery, "", last_attempt=last_attempt)
            result.sent += 1
            result.emails += delivery.channel == NotificationDelivery.Channel.EMAIL
    # The Slack approval message follows the request (integrations).
    if kind in SLACK_APPROVAL_KINDS and SlackWorkspace.objects.filter(is_active=True).exists():
        after_commit.send("slack_sync", object_id)
    # "notification <kind> #<id>: <n> emails" is what operators (and tests) grep for.
    logger.info(
        "notification %s #%s: %d emails, %d sent in all, %d pending (%s)",
        kind,
        object_id,
        result.emails,
        result.sent,
        result.pending,
        notification_id,
    )
    return result
