"""Access request transitions: submit, extend, approve, deny, cancel, lapse (and approver reminders).

Callers: views, the API, tasks. Each function opens its own transaction, locks the request row,
authorizes on the locked row, validates, writes with update_fields, records one AccessEvent per
change, and schedules notifications/expiry with ``transaction.on_commit`` (ids only).
Raises TransitionNotAllowed (409), PolicyViolation (400), NotAuthorized/StepUpRequired (403).
"""

from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q

from accessgov import clock, otp, permissions, policies
from accessgov.exceptions import AccessGovError, NotAuthorized, PolicyViolation, TransitionNotAllowed
from accessgov.models import AccessEvent, AccessRequest, Decision, Eligibility, Grant, Role, User
from accessgov.services import grants as grant_services
from accessgov.services import notification_outbox, withdrawals
from accessgov.services.events import event_record, event_record_bulk
from accessgov.services.integrations import external_checks
from accessgov.workflow import ensure_transition

Status = AccessRequest.Status
Type = AccessEvent.Type


def _notify(kind: str, object_id: int) -> None:
    notification_outbox.notify(kind, object_id)


LAPSED = "This request has lapsed: it waited longer than its role allows."


def _extended(access_request: AccessRequest) -> Grant | None:
    """The grant an extension request asks to extend (None for any other request). Every event of an extension
    names that grant too, so the grant's own timeline shows the extension asked for and what became of it."""
    if access_request.extends_grant_id is None:
        return None
    return Grant.objects.select_related("role").get(pk=access_request.extends_grant_id)


def _lock_for_decision(access_request_id: int) -> AccessRequest:
    """Lock the requester's account row, then the request (the order deactivation takes them in), so a
    deactivation and a decision on the same person's request never interleave."""
    requester_id = AccessRequest.objects.filter(pk=access_request_id).values_list("requester_id", flat=True).first()
    if requester_id is None:
        raise TransitionNotAllowed("This request does not exist.")
    list(User.objects.select_for_update(no_key=True, of=("self",)).filter(pk=requester_id).values_list("pk"))
    return _lock(access_request_id)


def _lock(access_request_id: int) -> AccessRequest:
    try:
        return (
            AccessRequest.objects.select_for_update(no_key=True, of=("self",))
            .select_related("role__system", "requester")
            .get(pk=access_request_id)
        )
    except AccessRequest.DoesNotExist as exc:
        raise TransitionNotAllowed("This request does not exist.") from exc


def _create(
    actor: User,
    role: Role,
    *,
    kind: str,
    duration: timedelta,
    justification: str,
    ticket: str,
    starts_at: datetime | None,
    extends_grant: Grant | None,
    client_address: str | None,
    now: datetime,
    external=None,
) -> AccessRequest:
    justification = justification.strip()
    if len(justification) < 10:
        raise PolicyViolation("Explain why you need this access (at least 10 characters).")
    policies.validate_ticket(role, ticket)
    issue = external.issue if external is not None else None
    # A request of the same role past its deadline reads as lapsed everywhere, so it does not block asking again:
    # its lapse is recorded here, as the sweep would. Skip-locked as the sweep: a decision in flight on it (which
    # refuses a lapsed request) is never waited for, and asking again is refused as a duplicate only then.
    unswept = list(
        AccessRequest.objects.lapsed_unswept(now)
        .filter(requester=actor, role=role)
        .select_for_update(skip_locked=True, no_key=True, of=("self",))
        .only("pk", "role_id", "extends_grant_id", "lapses_at")
    )
    if unswept:
        _lapse(unswept, now=now, job="deadline", data={"found_by": "submit"})
    try:
        with transaction.atomic():
            access_request = AccessRequest.objects.create(
                requester=actor,
                role=role,
                kind=kind,
                extends_grant=extends_grant,
                requested_duration=duration,
                starts_at=starts_at,
                justification=justification,
                ticket=ticket.strip(),
                created_at=now,
                lapses_at=now + role.pending_timeout,
                ticket_title=issue.title if issue else "",
                ticket_url=issue.url if issue else "",
                ticket_provider=external.ticket_provider if issue else None,
                ticket_bound=bool(issue and role.ticket_bound),
            )
    except IntegrityError as exc:
        raise TransitionNotAllowed(f"You already have a pending request for {role}.") from exc
    event_record(
        Type.REQUEST_SUBMITTED,
        actor=actor,
        client_address=client_address,
        access_request=access_request,
        grant=extends_grant,
        reason=justification,
        data={
            "duration_seconds": int(duration.total_seconds()),
            "ticket": access_request.ticket,
            "kind": kind,
            "starts_at": starts_at.isoformat() if starts_at else None,
            **(
                {
                    "ticket_title": issue.title,
                    "ticket_status": issue.status,
                    "ticket_bound": access_request.ticket_bound,
                }
                if issue
                else {}
            ),
        },
    )
    outcome = policies.auto_approval_decision(
        role, actor, now, provider_checks=external.provider_checks if external is not None else None
    )
    access_request.auto_approval_note = "\n".join(outcome.notes)
    if outcome.reason:
        data: dict[str, Any] = {}
        note: list[str] = []
        if outcome.evidence:
            data["evidence"] = outcome.evidence
        if outcome.ends_at is not None and outcome.ends_at < max(starts_at or now, now) + duration:
            # The grant ends at the earlier of its duration and the end of the on-call shift.
            duration = outcome.ends_at - max(starts_at or now, now)
            data["capped_at_shift_end"] = outcome.ends_at.isoformat()
            note.append(f"Ends at {outcome.ends_at:%Y-%m-%d %H:%M} UTC, the end of the on-call shift.")
        if outcome.incident_id:
            access_request.incident_id = outcome.incident_id
            access_request.incident_provider_id = outcome.incident_provider_id
            note.append(f"Ends when incident {outcome.incident_id} is resolved, if that comes first.")
        access_request.auto_approval_evidence = data
        access_request.auto_approval_note = "\n".join(note)
        access_request.auto_approved_by_rule = outcome.reason
        _approve(
            access_request,
            now=now,
            actor=None,
            job="auto-approval",
            reason=outcome.reason,
            duration=duration,
            data=data,
            # written by the approval's own save (one write of the request, one audit log entry)
            also_saved=[
                *("auto_approval_note", "auto_approval_evidence", "auto_approved_by_rule"),
                *("incident_id", "incident_provider"),
            ],
        )
    else:
        if access_request.auto_approval_note:
            access_request.save(update_fields=["auto_approval_note"])
        _notify("request_submitted", access_request.pk)
    return access_request


def access_request_submit(
    actor: User,
    *,
    role: Role,
    duration: timedelta,
    justification: str,
    ticket: str = "",
    starts_at: datetime | None = None,
    client_address: str | None = None,
) -> AccessRequest:
    """A requester asks for ``role`` for ``duration`` (optionally from ``starts_at``).

    Refused when not eligible, outside the policy, or when the requester already holds or awaits
    the role (extend the grant instead). Auto-approved when the role needs no approval or a rule
    matches; otherwise the role's approvers are notified.
    """
    now = clock.now()
    if permissions.eligibility_problem(actor, role, now):
        raise PolicyViolation(f"You are not eligible to request {role}.")
    policies.validate_ticket(role, ticket)
    # The providers are asked before the transaction (no I/O inside one); their answers are applied in it.

    external = external_checks(role, actor, ticket=ticket, starts_at=starts_at, now=now)
    with transaction.atomic():
        role = Role.objects.select_for_update(no_key=True, of=("self",)).select_related("system").get(pk=role.pk)
        if permissions.eligibility_problem(actor, role, now, lock=True):
            raise PolicyViolation(f"You are not eligible to request {role}.")
        policies.validate_duration(role, duration)
        policies.validate_start(starts_at, now)
        if starts_at is not None:
            eligible_until = permissions.eligibility_ends_at(actor, role, now)
            if eligible_until is not None and starts_at >= eligible_until:
                raise PolicyViolation(
                    f"Your eligibility for {role} ends at {eligible_until:%Y-%m-%d %H:%M} UTC: "
                    "choose a start before then."
                )
        if grant_services.holds_current(actor, role, now):
            if Grant.objects.current().filter(user=actor, role=role, is_break_glass=True).exists():
                raise TransitionNotAllowed(BREAK_GLASS_HELD.format(role=role))
            raise TransitionNotAllowed(f"You already have access to {role}; extend it instead of asking again.")
        return _create(
            actor,
            role,
            kind=AccessRequest.Kind.ACCESS,
            duration=duration,
            justification=justification,
            ticket=ticket,
            starts_at=starts_at,
            extends_grant=None,
            client_address=client_address,
            now=now,
            external=external,
        )


# One grant of a role at a time (the database holds it): break-glass access is neither extended nor overlapped
# by a normal request — released (or ended), the role can be asked for the normal way.
BREAK_GLASS_HELD = (
    "Break-glass access to {role} cannot be extended, and you cannot ask for the role while you hold it: "
    "release it (or let it end), then request access normally."
)


def extension_refusal(actor: User, grant: Grant, now: datetime, *, lock: bool = False) -> AccessGovError | None:
    """Why ``actor`` cannot ask to extend ``grant`` at all (whatever the duration), or None. The extension form
    says it before anything is typed; ``access_request_submit_extension`` checks it again on the locked rows."""
    if not grant.is_active_at(now):
        return TransitionNotAllowed("Only active access can be extended.")
    if grant.is_break_glass:
        return PolicyViolation(BREAK_GLASS_HELD.format(role=grant.role))
    if permissions.eligibility_problem(actor, grant.role, now, lock=lock):
        return PolicyViolation(f"You are no longer eligible for {grant.role}: it cannot be extended.")
    if grant.role.max_duration - (grant.expires_at - now) < timedelta(minutes=5):
        return PolicyViolation(f"This grant already runs for the longest {grant.role} allows.")
    return None


def access_request_submit_extension(
    actor: User,
    *,
    grant_id: int,
    duration: timedelta,
    justification: str,
    ticket: str = "",
    seen_expires_at: datetime | None = None,
    client_address: str | None = None,
) -> AccessRequest:
    """Ask to move an active grant's end by ``duration``. When approved the same grant is extended;
    no second, overlapping grant is ever created. The extended grant may not last longer in total
    than the role's maximum duration from now. ``seen_expires_at`` is the end the asker was shown: when
    the grant has been extended since (a second click on the form, another tab), nothing is asked again."""
    now = clock.now()
    role = Role.objects.filter(grants__pk=grant_id).first()
    external = None
    if role is not None and ticket:
        # As for a new request, the ticket provider is asked (outside the transaction) whether the ticket exists,
        # is open, is in an allowed project and is the requester's.
        policies.validate_ticket(role, ticket)
        external = external_checks(role, actor, ticket=ticket, starts_at=None, now=now, on_call=False)
    with transaction.atomic():
        grant = (
            Grant.objects.select_for_update(no_key=True, of=("self",)).select_related("role__system").get(pk=grant_id)
        )
        if grant.user_id != actor.pk:
            raise NotAuthorized("Only the person who holds a grant can ask to extend it.")
        if seen_expires_at is not None and seen_expires_at != grant.expires_at and grant.is_active_at(now):
            raise TransitionNotAllowed(
                f"This access was extended a moment ago: it now ends at {grant.expires_at:%Y-%m-%d %H:%M} UTC. "
                "Nothing more was asked; ask again if you still need more time."
            )
        if (refusal := extension_refusal(actor, grant, now, lock=True)) is not None:
            raise refusal
        ceiling = grant.role.max_duration - (grant.expires_at - now)
        policies.validate_duration(
            grant.role,
            duration,
            ceiling=ceiling,
            ceiling_is="With the time it already has, this access can be extended by",
        )
        return _create(
            actor,
            grant.role,
            kind=AccessRequest.Kind.EXTENSION,
            duration=duration,
            justification=justification,
            ticket=ticket,
            starts_at=None,
            extends_grant=grant,
            client_address=client_address,
            now=now,
            external=external,
        )


def _check_step_up(role: Role, step_up_at: datetime | None, now: datetime) -> None:
    if role.step_up_required:
        otp.ensure_step_up(step_up_at, now, action=f"Deciding on {role}")


def _approve(
    access_request: AccessRequest,
    *,
    now: datetime,
    actor: User | None,
    job: str | None,
    reason: str,
    duration: timedelta,
    client_address: str | None = None,
    data: dict | None = None,
    also_saved: list[str] | None = None,
) -> None:
    """Move a locked pending request to approved and produce (or extend) its grant. ``data``: what an
    automatic approval relied on (provider evidence), recorded in its event; ``also_saved``: fields the
    caller set on the request, written with the approval."""
    ensure_transition("request", access_request.status, Status.APPROVED)
    access_request.status = Status.APPROVED
    access_request.decided_at = now
    access_request.approved_duration = duration
    access_request.save(update_fields=["status", "decided_at", "approved_duration", *(also_saved or [])])
    event_record(
        Type.REQUEST_AUTO_APPROVED if actor is None else Type.REQUEST_APPROVED,
        actor=actor,
        job=job,
        client_address=client_address,
        access_request=access_request,
        grant=_extended(access_request),
        reason=reason,
        data={**(data or {}), "approved_duration_seconds": int(duration.total_seconds())},
    )
    if access_request.kind == AccessRequest.Kind.EXTENSION:
        grant_services.grant_extend_for(
            access_request, duration=duration, now=now, actor=actor, job=job, client_address=client_address
        )
    else:
        grant_services.grant_create_for(
            access_request, duration=duration, now=now, actor=actor, job=job, client_address=client_address
        )
    _notify("request_decided", access_request.pk)


def access_request_approve(
    actor: User,
    access_request_id: int,
    *,
    comment: str = "",
    duration: timedelta | None = None,
    step_up_at: datetime | None = None,
    client_address: str | None = None,
) -> AccessRequest:
    """Record ``actor``'s approval; once the role's N distinct approvals are in, approve the request
    and grant access for the shortest duration any approver allowed (never longer than requested).
    Locks the requester's account, the request, the grant an extension names and the requester's
    eligibility rows in force. A requester who is no longer eligible (or deactivated) has the request
    withdrawn, committed, and then TransitionNotAllowed says why."""
    withdrawn_because = None
    with transaction.atomic():
        access_request = _lock_for_decision(access_request_id)
        if access_request.extends_grant_id:
            # Take every row lock before the first event (which takes the ledger lock): no deadlocks.
            Grant.objects.select_for_update(no_key=True, of=("self",)).filter(
                pk=access_request.extends_grant_id
            ).first()
        now = clock.now()  # after the lock: a wait behind another transaction must not approve late
        ensure_transition("request", access_request.status, Status.APPROVED)
        if access_request.status_at(now) == Status.LAPSED:
            raise TransitionNotAllowed(LAPSED)
        permissions.ensure_can_decide_access_request(actor, access_request)
        withdrawn_because = permissions.eligibility_problem(
            access_request.requester, access_request.role, now, lock=True
        )
        if withdrawn_because:
            withdrawals.requests_withdraw([access_request], now=now, reason=withdrawn_because, job="eligibility")
        else:
            _record_approval(
                access_request,
                actor,
                comment=comment,
                duration=duration,
                step_up_at=step_up_at,
                client_address=client_address,
                now=now,
            )
    if withdrawn_because:
        raise TransitionNotAllowed(f"{withdrawn_because} The request was withdrawn; nothing was approved.")
    return access_request


def _record_approval(
    access_request: AccessRequest,
    actor: User,
    *,
    comment: str,
    duration: timedelta | None,
    step_up_at: datetime | None,
    client_address: str | None,
    now: datetime,
) -> None:
    _check_step_up(access_request.role, step_up_at, now)
    if duration is not None:
        if duration > access_request.requested_duration:
            raise PolicyViolation("An approver may shorten the duration, never lengthen it.")
        policies.validate_duration(access_request.role, duration)
    decision = Decision.objects.create(
        access_request=access_request,
        approver=actor,
        requester_id=access_request.requester_id,
        outcome=Decision.Outcome.APPROVE,
        comment=comment.strip(),
        duration=duration,
        step_up_at=step_up_at if access_request.role.step_up_required else None,
        created_at=now,
    )
    event_record(
        Type.DECISION_APPROVE,
        actor=actor,
        client_address=client_address,
        access_request=access_request,
        grant=_extended(access_request),
        reason=decision.comment,
        data={
            "decision_id": decision.pk,
            "duration_seconds": int(duration.total_seconds()) if duration else None,
            "step_up_at": decision.step_up_at.isoformat() if decision.step_up_at else None,
        },
    )
    approvals = list(access_request.decisions.filter(outcome=Decision.Outcome.APPROVE))
    needed = max(1, policies.approvals_required(access_request.role))
    if len(approvals) >= needed:
        durations = [d.duration for d in approvals if d.duration] + [access_request.requested_duration]
        # What the requester reads in their inbox: how many approved, for how long if less than asked, and what
        # the deciding approver said.
        said = [f"{len(approvals)} of {needed} approvals"]
        if min(durations) < access_request.requested_duration:
            said.append(
                f"for {policies.format_duration(min(durations))} of the "
                f"{policies.format_duration(access_request.requested_duration)} asked"
            )
        if decision.comment:
            said.append(f"{actor.get_username()}: {decision.comment}")
        _approve(
            access_request,
            now=now,
            actor=actor,
            job=None,
            client_address=client_address,
            reason=" · ".join(said),
            duration=min(durations),
        )
    else:
        _notify("request_approval_progress", access_request.pk)


def access_request_deny(
    actor: User,
    access_request_id: int,
    *,
    comment: str,
    step_up_at: datetime | None = None,
    client_address: str | None = None,
) -> AccessRequest:
    """One approver's denial ends the request. A comment is required (the requester reads it)."""
    if not comment.strip():
        raise PolicyViolation("Say why you deny the request: the requester will read it.")
    with transaction.atomic():
        access_request = _lock(access_request_id)
        now = clock.now()
        ensure_transition("request", access_request.status, Status.DENIED)
        if access_request.status_at(now) == Status.LAPSED:
            # As for an approval: past its deadline the request is the sweep's to lapse, never denied.
            raise TransitionNotAllowed(LAPSED)
        permissions.ensure_can_decide_access_request(actor, access_request)
        _check_step_up(access_request.role, step_up_at, now)
        decision = Decision.objects.create(
            access_request=access_request,
            approver=actor,
            requester_id=access_request.requester_id,
            outcome=Decision.Outcome.DENY,
            comment=comment.strip(),
            step_up_at=step_up_at if access_request.role.step_up_required else None,
            created_at=now,
        )
        extended = _extended(access_request)
        event_record(
            Type.DECISION_DENY,
            actor=actor,
            client_address=client_address,
            access_request=access_request,
            grant=extended,
            reason=decision.comment,
            data={"decision_id": decision.pk},
        )
        access_request.status = Status.DENIED
        access_request.decided_at = now
        access_request.save(update_fields=["status", "decided_at"])
        event_record(
            Type.REQUEST_DENIED,
            actor=actor,
            client_address=client_address,
            access_request=access_request,
            grant=extended,
            reason=decision.comment,
        )
        _notify("request_decided", access_request.pk)
        return access_request


LAPSED_NOT_CANCELLED = (
    "This request has lapsed: nobody decided it before its deadline, so it is recorded as lapsed, not cancelled. "
    "Nothing was granted."
)


def access_request_cancel(actor: User, access_request_id: int, *, client_address: str | None = None) -> AccessRequest:
    """The requester withdraws a pending request. At or after its ``lapses_at`` it is too late to cancel: the
    request lapses there and then, as the sweep would lapse it (``decided_at`` its deadline, one request.lapsed
    event, the requester told), that is committed, and TransitionNotAllowed says so. Locks the request."""
    with transaction.atomic():
        access_request = _lock(access_request_id)
        permissions.ensure_can_cancel_access_request(actor, access_request)
        ensure_transition("request", access_request.status, Status.CANCELLED)
        now = clock.now()  # after the lock, as for a decision: a cancel that waited must not cancel late
        lapsed = access_request.status_at(now) == Status.LAPSED
        if lapsed:
            _lapse([access_request], now=now, job="deadline", data={"found_by": "cancel"})
        else:
            access_request.status = Status.CANCELLED
            access_request.decided_at = now
            access_request.save(update_fields=["status", "decided_at"])
            event_record(
                Type.REQUEST_CANCELLED,
                actor=actor,
                client_address=client_address,
                access_request=access_request,
                grant=_extended(access_request),
            )
    if lapsed:
        raise TransitionNotAllowed(LAPSED_NOT_CANCELLED)
    return access_request


WITHDRAWN_BECAUSE_INELIGIBLE = "The requester is no longer eligible for this role."


def access_request_withdraw_ineligible(
    now: datetime, *, role_ids: list[int] | None = None, job: str = "eligibility", batch_size: int = 1000
) -> int:
    """Set-based: pending requests whose requester is deactivated or no longer eligible for the role at
    ``now`` (an owner ended the eligibility, a review revoked it, its end date passed, the requester left
    the group) are withdrawn with a reason. Called where eligibility ends and by every sweep. Rows
    another transaction holds (a decision in flight) are skipped: that decision re-checks eligibility
    on the locked rows itself."""
    eligible = (
        Eligibility.objects.active(now)
        .filter(role_id=OuterRef("role_id"))
        .filter(Q(user_id=OuterRef("requester_id")) | Q(group__user=OuterRef("requester_id")))
    )
    total = 0
    while True:
        with transaction.atomic():
            pending = AccessRequest.objects.filter(status=Status.PENDING)
            if role_ids is not None:
                pending = pending.filter(role_id__in=role_ids)
            due = list(
                pending.filter(~Exists(eligible) | Q(requester__is_active=False))
                .select_for_update(skip_locked=True, no_key=True, of=("self",))
                .order_by("pk")
                .only("pk", "role_id", "extends_grant_id")[:batch_size]
            )
            if due:
                withdrawals.requests_withdraw(due, now=now, reason=WITHDRAWN_BECAUSE_INELIGIBLE, job=job)
        total += len(due)
        if len(due) < batch_size:
            return total


def access_request_withdraw_all(requester: User, *, actor: User, reason: str) -> int:
    """Set-based: every pending request of ``requester`` becomes cancelled (their account was
    deactivated), with one request.cancelled event each naming ``actor``. Called by services.users
    inside its transaction; locks the rows it changes."""
    due = list(
        AccessRequest.objects.select_for_update(no_key=True, of=("self",))
        .filter(requester=requester, status=Status.PENDING)
        .only("pk", "role_id", "extends_grant_id")
    )
    if not due:
        return 0
    now = clock.now()
    AccessRequest.objects.filter(pk__in=[r.pk for r in due], status=Status.PENDING).update(
        status=Status.CANCELLED, decided_at=now
    )
    event_record_bulk(
        [
            AccessEvent(
                event_type=Type.REQUEST_CANCELLED,
                actor=actor,
                actor_label=actor.get_username(),
                access_request_id=r.pk,
                grant_id=r.extends_grant_id,
                role_id=r.role_id,
                occurred_at=now,
                reason=f"Requester's account deactivated: {reason}",
                data={"deactivated": True},
            )
            for r in due
        ]
    )
    return len(due)


def _lapse(due: list[AccessRequest], *, now: datetime, job: str, data: dict[str, Any] | None = None) -> None:
    """Pending requests (locked by the caller, all past their ``lapses_at``) become lapsed, one request.lapsed
    event each (an extension's names its grant), and their requesters are told. The sweep and a too-late cancel
    share it, so a lapse is recorded the same way whoever finds it."""
    # Lapsed at its deadline, whenever it was found (reports time and filter lapses by decided_at); the event is
    # the record of when it was seen, and by what.
    AccessRequest.objects.filter(pk__in=[r.pk for r in due], status=Status.PENDING).update(
        status=Status.LAPSED, decided_at=F("lapses_at")
    )
    event_record_bulk(
        [
            AccessEvent(
                event_type=Type.REQUEST_LAPSED,
                actor_label=f"system:{job}",
                access_request_id=r.pk,
                grant_id=r.extends_grant_id,
                role_id=r.role_id,
                occurred_at=now,
                reason="No decision before the deadline.",
                data=data or {},
            )
            for r in due
        ]
    )
    for r in due:
        r.status, r.decided_at = Status.LAPSED, r.lapses_at
        _notify("request_lapsed", r.pk)


def access_request_lapse_due(now: datetime, *, job: str = "sweep", batch_size: int = 2000) -> int:
    """Set-based: every pending request past its ``lapses_at`` becomes lapsed, with one event each.
    Rows another transaction holds (an approval in flight) are skipped and retried next sweep."""
    total = 0
    while True:
        with transaction.atomic():
            due = list(
                AccessRequest.objects.lapsed_unswept(now)
                .select_for_update(skip_locked=True, no_key=True, of=("self",))
                .order_by("pk")
                .only("pk", "role_id", "extends_grant_id", "lapses_at")[:batch_size]
            )
            if not due:
                return total
            _lapse(due, now=now, job=job)
        total += len(due)
        if len(due) < batch_size:
            return total


def access_request_remind_due(now: datetime) -> int:
    """Remind approvers once, at half of the pending timeout (bookkeeping only, not a state change).
    The requests are claimed under skip-locked row locks, so parallel sweeps remind each once."""
    with transaction.atomic():
        pending = (
            AccessRequest.objects.pending_at(now)
            .filter(reminder_sent_at__isnull=True)
            .select_for_update(skip_locked=True, no_key=True, of=("self",))
            .only("pk", "created_at", "lapses_at")
        )
        ids = [r.pk for r in pending if r.created_at + (r.lapses_at - r.created_at) / 2 <= now]
        if not ids:
            return 0
        AccessRequest.objects.filter(pk__in=ids).update(reminder_sent_at=now)
        for pk in ids:
            _notify("request_reminder", pk)
    return len(ids)
