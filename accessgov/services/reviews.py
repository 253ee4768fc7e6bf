"""Access reviews: open a campaign over systems, assign reviewers (never about themselves), record
keep/revoke decisions, and close — applying every decision through the lifecycle services.

Callers: the review pages, the quarterly beat task, the sweep (reminders at half time and when overdue;
closes campaigns at the due date plus their grace period). Every change records an access event in its
transaction; a closed campaign is immutable. Reminders are bookkeeping (a timestamp), not events.
"""

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import DateTimeField, ExpressionWrapper, F, Q

from accessgov import clock, permissions
from accessgov.exceptions import NotAuthorized, PolicyViolation, TransitionNotAllowed
from accessgov.models import AccessEvent, Eligibility, Grant, ReviewCampaign, ReviewItem, System, User
from accessgov.services import access_requests as request_services
from accessgov.services import grants as grant_services
from accessgov.services import notification_outbox
from accessgov.services.events import actor_label, event_record, event_record_bulk

Type = AccessEvent.Type
Status = ReviewCampaign.Status
# A campaign due further ahead is a typo (reviews are quarterly); year 9999 overflowed due date + grace
# on every page that shows the campaign, and in the sweep that closes campaigns.
MAX_DUE_AHEAD = timedelta(days=366)
MAX_COMMENT_LENGTH = 2000  # like every other reason a person types (forms.ReasonForm, DecisionForm)


def _is_subject(user: User, item: ReviewItem) -> bool:
    if item.subject_user_id == user.pk:
        return True
    return bool(item.subject_group_id) and user.groups.filter(pk=item.subject_group_id).exists()


def _pick_reviewer(item: ReviewItem, load: Counter, owners: dict[int, list[User]], fallback: list[User]) -> User | None:
    """The least-loaded owner of the item's system who is not its subject; auditors as fallback."""
    for pool in (owners.get(item.role.system_id, []), fallback):
        candidates = [u for u in pool if not _is_subject(u, item)]
        if candidates:
            chosen = min(candidates, key=lambda u: (load[u.pk], u.pk))
            load[chosen.pk] += 1
            return chosen
    return None


def review_campaign_create(
    actor: User | None,
    *,
    name: str,
    systems: list[System],
    due_at: datetime,
    no_response: str = ReviewCampaign.NoResponse.REVOKE,
    keep_for: timedelta | None = None,
    long_grant_threshold: timedelta = timedelta(days=7),
    grace: timedelta | None = None,
    job: str | None = None,
    client_address: str | None = None,
    period: str = "",
) -> ReviewCampaign:
    """Open a campaign: one item per eligibility in force on the systems, and one per grant active for
    longer than ``long_grant_threshold``; each gets a reviewer who is not its subject. Reviewers are
    told after commit (the start reminder). Raises NotAuthorized (not an auditor) or PolicyViolation.
    ``period`` (scheduled campaigns): the database holds one campaign per period — a second one raises
    IntegrityError and writes nothing (the caller's transaction is left usable)."""
    now = clock.now()
    keep_for = timedelta(days=settings.REVIEW_KEEP_DAYS) if keep_for is None else keep_for
    grace = timedelta(days=settings.REVIEW_GRACE_DAYS) if grace is None else grace
    if actor is not None and not permissions.is_auditor(actor):
        raise NotAuthorized("Only auditors open access reviews.")
    if not name.strip():
        raise PolicyViolation("Give the review a name.")
    if len(name.strip()) > ReviewCampaign._meta.get_field("name").max_length or "\x00" in name:
        raise PolicyViolation("A review's name is at most 200 characters, without NUL characters.")
    if due_at <= now:
        raise PolicyViolation("The due date must be in the future.")
    if due_at > now + MAX_DUE_AHEAD:
        raise PolicyViolation(f"The due date can be at most {MAX_DUE_AHEAD.days} days ahead.")
    if not systems:
        raise PolicyViolation("Choose at least one system to review.")
    if no_response not in ReviewCampaign.NoResponse.values:
        raise PolicyViolation("Choose what happens to items nobody answers.")
    if keep_for <= timedelta(0) or long_grant_threshold <= timedelta(0) or grace < timedelta(0):
        raise PolicyViolation("Periods must be positive.")
    with transaction.atomic():
        campaign = ReviewCampaign.objects.create(
            name=name.strip(),
            period=period,
            no_response=no_response,
            keep_for=keep_for,
            long_grant_threshold=long_grant_threshold,
            grace=grace,
            created_by=actor,
            created_at=now,
            due_at=due_at,
            start_reminded_at=now,
        )
        campaign.systems.set(systems)
        items = [
            ReviewItem(campaign=campaign, eligibility=e, role=e.role, subject_user=e.user, subject_group=e.group)
            for e in Eligibility.objects.active(now).filter(role__system__in=systems).select_related("role")
        ] + [
            ReviewItem(campaign=campaign, grant=g, role=g.role, subject_user=g.user)
            for g in Grant.objects.active(now)
            .filter(role__system__in=systems, starts_at__lte=now - long_grant_threshold)
            .select_related("role")
        ]
        owners = {s.pk: sorted(permissions.owners_of_system(s), key=lambda u: u.pk) for s in systems}
        fallback = sorted(permissions.auditors(), key=lambda u: u.pk)
        load: Counter = Counter()
        for item in items:
            item.reviewer = _pick_reviewer(item, load, owners, fallback)
        ReviewItem.objects.bulk_create(items)
        event_record(
            Type.REVIEW_OPENED,
            actor=actor,
            job=job,
            client_address=client_address,
            reason=campaign.name,
            data={
                "campaign_id": campaign.pk,
                "items": len(items),
                "due_at": due_at.isoformat(),
                "systems": [s.slug for s in systems],
                "no_response": no_response,
            },
        )
        _notify_after_commit("review_started", campaign.pk)
        return campaign


def _notify_after_commit(kind: str, object_id: int) -> None:
    notification_outbox.notify(kind, object_id)


def _lock_item(item_id: int) -> ReviewItem:
    item = (
        ReviewItem.objects.select_for_update(no_key=True, of=("self",))
        .select_related("campaign", "role__system", "subject_user", "subject_group", "grant")
        .get(pk=item_id)
    )
    if item.campaign.status != Status.OPEN:
        raise TransitionNotAllowed("This campaign is closed; its decisions can no longer change.")
    return item


def _about(item: ReviewItem) -> dict[str, Any]:
    """Whose access an item decides, for its events' data: the item row can be edited, the ledger cannot
    (and ``review.decided`` is the only record of who was reviewed by whom before the close). Needs the
    item's subject_user/subject_group loaded (their username/name)."""
    about: dict[str, Any] = {
        "item_kind": "grant" if item.grant_id else "eligibility",
        "eligibility_id": item.eligibility_id,
        "grant_id": item.grant_id,
    }
    if item.subject_user_id:
        about |= {"subject_user_id": item.subject_user_id, "subject_username": item.subject_user.get_username()}
    else:
        about |= {"subject_group_id": item.subject_group_id, "subject_group_name": item.subject_group.name}
    return about


def review_item_decide(
    actor: User, item_id: int, *, decision: str, comment: str = "", client_address: str | None = None
) -> ReviewItem:
    """The assigned reviewer keeps or revokes an item (a comment is required to revoke)."""
    if decision not in ReviewItem.Decision.values:
        raise PolicyViolation("Choose keep or revoke.")
    if decision == ReviewItem.Decision.REVOKE and not comment.strip():
        raise PolicyViolation("Say why this access should be revoked.")
    if len(comment.strip()) > MAX_COMMENT_LENGTH:
        raise PolicyViolation(f"A comment is at most {MAX_COMMENT_LENGTH} characters.")
    with transaction.atomic():
        item = _lock_item(item_id)
        if _is_subject(actor, item):
            raise NotAuthorized("Nobody reviews their own access; an auditor will reassign this item.")
        if item.reviewer_id != actor.pk:
            raise NotAuthorized("This item is assigned to another reviewer.")
        # As for approvals: an account the subject recently made, empowered or reset, or one whose token they hold,
        # is not an independent reviewer of the subject's access.
        problem = permissions.independence_problem(actor, item.subject_user) if item.subject_user else None
        if problem:
            raise NotAuthorized(f"{problem} An auditor will reassign this item.")
        item.decision, item.comment = decision, comment.strip()
        item.decided_at, item.decided_by = clock.now(), actor
        item.save(update_fields=["decision", "comment", "decided_at", "decided_by"])
        event_record(
            Type.REVIEW_DECIDED,
            actor=actor,
            client_address=client_address,
            role=item.role,
            grant=item.grant,  # an item about a grant names it, so the trail shows the grantee
            reason=item.comment,
            data={"campaign_id": item.campaign_id, "item_id": item.pk, "decision": decision, **_about(item)},
        )
        return item


def review_item_reassign(actor: User, item_id: int, *, reviewer: User, client_address: str | None = None) -> ReviewItem:
    """An auditor gives an item to another reviewer (never its subject). Its review.reassigned event names
    whose access the item is about (``_about``) and, for an item about a grant, the grant."""
    if not permissions.is_auditor(actor):
        raise NotAuthorized("Only auditors reassign review items.")
    with transaction.atomic():
        item = _lock_item(item_id)
        if _is_subject(reviewer, item):
            raise PolicyViolation(f"{reviewer} is the subject of this item and cannot review it.")
        previous = item.reviewer_id
        item.reviewer = reviewer
        item.save(update_fields=["reviewer"])
        event_record(
            Type.REVIEW_REASSIGNED,
            actor=actor,
            client_address=client_address,
            role=item.role,
            grant=item.grant,  # as review.decided: the trail and the audit CSV show the grantee
            data={
                "campaign_id": item.campaign_id,
                "item_id": item.pk,
                "from": previous,
                "to": reviewer.pk,
                **_about(item),
            },
        )
        return item


def _grants_from(
    revoked: list[ReviewItem], now: datetime, *, losing: dict[tuple[int, int], ReviewItem] | None = None
) -> dict[int, ReviewItem]:
    """The current grants that revoked items end, with the item that ends each: the item's own grant, or
    the grants of the role held by the eligibility's user (or group members) who are not eligible for the
    role in another way (their own eligibility, another group's, one kept in this campaign): a grant the
    holder could ask for again at once is not ended by the review. Three queries whatever the number of
    items. Shared by closing a campaign and its confirmation page."""
    ending: dict[int, ReviewItem] = {i.grant_id: i for i in revoked if i.grant_id}
    by_eligibility = [i for i in revoked if i.eligibility_id]
    if by_eligibility:
        holders = _losing_eligibility(by_eligibility, now) if losing is None else losing
        for pk, user_id, role_id in (
            Grant.objects.current()
            .filter(role_id__in={i.role_id for i in by_eligibility})
            .values_list("pk", "user_id", "role_id")
        ):
            if (user_id, role_id) in holders:
                ending.setdefault(pk, holders[(user_id, role_id)])
    return ending


def _losing_eligibility(by_eligibility: list[ReviewItem], now: datetime) -> dict[tuple[int, int], ReviewItem]:
    """(person, role) pairs whose last eligibility in force the revoked eligibility items end, with the item
    that ends it; someone still eligible another way (not through these items) is not among them."""
    holders: dict[tuple[int, int], ReviewItem] = {}
    # An answered item names who decided (the grant's ender) over an unanswered one covering the same pair.
    for item, users in sorted(_subjects(by_eligibility), key=lambda pair: bool(pair[0].decision)):
        holders.update({(user_id, item.role_id): item for user_id in users})
    other = (
        Eligibility.objects.active(now)
        .filter(role_id__in={i.role_id for i in by_eligibility})
        .exclude(pk__in=[i.eligibility_id for i in by_eligibility])
        .order_by()
    )
    users = {user_id for user_id, _ in holders}
    for role_id, user_id, member_id in other.filter(Q(user_id__in=users) | Q(group__user__in=users)).values_list(
        "role_id", "user_id", "group__user"
    ):
        holders.pop((user_id, role_id), None)
        holders.pop((member_id, role_id), None)
    return holders


def subjects_by_item(items: list[ReviewItem]) -> dict[int, set[int]]:
    """Each item's id with the ids of the people it covers: none of them may review it (the page leaves them
    out of its reviewer choices; ``review_item_reassign`` refuses them)."""
    return {item.pk: people for item, people in _subjects(items)}


def _subjects(items: list[ReviewItem]) -> list[tuple[ReviewItem, set[int]]]:
    """Each item with the ids of the people it covers (its user, or its group's members)."""
    members: dict[int, set[int]] = {}
    for user_id, group_id in User.groups.through.objects.filter(
        group_id__in={i.subject_group_id for i in items if i.subject_group_id}
    ).values_list("user_id", "group_id"):
        members.setdefault(group_id, set()).add(user_id)
    return [
        (item, {item.subject_user_id} if item.subject_user_id else members.get(item.subject_group_id, set()))
        for item in items
    ]


def _close_plan(campaign: ReviewCampaign, items: list[ReviewItem]) -> dict[str, list[ReviewItem]]:
    """What closing does to each item: its decision, or the campaign's no-response policy."""
    no_answer = ReviewItem.Decision.REVOKE if campaign.no_response == ReviewCampaign.NoResponse.REVOKE else ""
    by_outcome: dict[str, list[ReviewItem]] = {"revoked": [], "kept": [], "kept_flagged": []}
    # Who decided, named in the reason the holder reads (their inbox, the grant page, the ledger).
    reviewer_names = dict(
        User.objects.filter(pk__in={i.decided_by_id for i in items if i.decided_by_id}).values_list("pk", "username")
    )
    for item in items:
        decision = item.decision or no_answer
        outcome = {ReviewItem.Decision.REVOKE: "revoked", ReviewItem.Decision.KEEP: "kept"}.get(
            decision, "kept_flagged"
        )
        item.reason = f"Access review '{campaign.name}': " + (
            f"{reviewer_names[item.decided_by_id]} decided {item.decision}: {item.comment}"
            if item.decided_by_id and item.decision
            else item.comment or "no answer before the due date"
        )
        by_outcome[outcome].append(item)
    return by_outcome


def review_campaign_close_preview(campaign_id: int) -> dict[str, int]:
    """What closing the campaign now would do, counted with the rules the close applies (read-only, no
    locks): items revoked (and how many of them unanswered), kept, kept and flagged, current grants
    that end, eligibilities that end and the people they cover. For the confirmation page."""
    campaign = ReviewCampaign.objects.get(pk=campaign_id)
    items = list(campaign.items.all())
    plan = _close_plan(campaign, items)
    revoked = plan["revoked"]
    now = clock.now()
    losing = _losing_eligibility([i for i in revoked if i.eligibility_id], now)
    people = {user_id for user_id, _ in losing}
    return {
        "revoked": len(revoked),
        "unanswered_revoked": sum(1 for i in revoked if not i.decision),
        "unanswered_kept": sum(1 for i in plan["kept_flagged"] if not i.decision),
        "kept": len(plan["kept"]),
        "kept_flagged": len(plan["kept_flagged"]),
        "grants_end": len(_grants_from(revoked, now, losing=losing)),
        "eligibilities_end": sum(1 for i in revoked if i.eligibility_id),
        "people_lose_eligibility": len(people),
    }


def _revoke_grants_from(revoked: list[ReviewItem], *, job: str, now: datetime, closer: User | None) -> int:
    """Revoke, through the lifecycle service, the current grants that revoked items end (``_grants_from``).
    Each is ended by whoever decided: the item's reviewer, or for an unanswered item the person who closed the
    campaign under its no-response policy (nobody when the campaign closed itself at its due date)."""
    ending = _grants_from(revoked, now)
    deciders = User.objects.in_bulk({i.decided_by_id for i in ending.values() if i.decided_by_id and i.decision})
    for pk, item in ending.items():
        try:
            grant_services.grant_revoke_by_system(
                pk,
                reason=item.reason,
                job=job,
                actor=deciders.get(item.decided_by_id) if item.decision else closer,
                data={"review_item": item.pk, "campaign": item.campaign_id},
            )
        except TransitionNotAllowed:
            continue  # ended meanwhile
    return len(ending)


def _eligibility_ends_apply(
    revoked: list[int], kept: list[int], *, now: datetime, keep_for: timedelta
) -> dict[int, tuple[datetime | None, datetime]]:
    """Move the end of the campaign's eligibility, set-based, and return the old and new end of each one
    it changed (django-auditlog does not see ``update()``: the review.applied events carry them).
    A revoke ends an eligibility now (one that has not started yet: just after its start, as the database
    requires an end after the start). A keep runs it on until ``now + keep_for`` at the latest: a standing
    eligibility gets that end, one that ends sooner keeps its owner's end (one person's "keep" never
    lengthens access), and one that ran out or that an owner ended during the campaign is not brought back.
    Neither ever moves an end later. Locks the rows (the caller holds the campaign and its items)."""
    revoked_ids = set(revoked)
    changed: dict[int, tuple[datetime | None, datetime]] = {}
    for pk, starts_at, ends_at in (
        Eligibility.objects.select_for_update(no_key=True, of=("self",))
        .filter(pk__in=[*revoked, *kept])
        .order_by("pk")
        .values_list("pk", "starts_at", "ends_at")
    ):
        if pk in revoked_ids:
            new_end = max(now, starts_at + timedelta(microseconds=1))
        elif starts_at <= now and (ends_at is None or ends_at > now):
            new_end = now + keep_for
        else:
            continue
        if ends_at is None or ends_at > new_end:
            changed[pk] = (ends_at, new_end)
    ended_now = [pk for pk, (_, new_end) in changed.items() if pk in revoked_ids and new_end == now]
    ended_at_start = [pk for pk, (_, new_end) in changed.items() if pk in revoked_ids and new_end != now]
    capped = [pk for pk in changed if pk not in revoked_ids]
    Eligibility.objects.filter(pk__in=ended_now).update(ends_at=now)
    Eligibility.objects.filter(pk__in=ended_at_start).update(ends_at=F("starts_at") + timedelta(microseconds=1))
    # Its end reminder is re-armed for the new end date.
    Eligibility.objects.filter(pk__in=capped).update(ends_at=now + keep_for, end_reminded_at=None)
    return changed


def _ends_data(change: tuple[datetime | None, datetime] | None) -> dict[str, str | None]:
    """A review.applied event's record of the eligibility end the close moved (nothing when it moved none;
    ``eligibility_ends_before`` is null for a standing eligibility)."""
    if change is None:
        return {}
    before, after = change
    return {
        "eligibility_ends_before": before.isoformat() if before else None,
        "eligibility_ends_after": after.isoformat(),
    }


def review_campaign_close(
    actor: User | None, campaign_id: int, *, job: str = "review-close", client_address: str | None = None
) -> ReviewCampaign:
    """Close a campaign and apply it, set-based: revoke decisions end the eligibility and revoke the
    active grants that came from it (through the lifecycle service, one event each); unanswered items
    follow the campaign's no-response policy; kept eligibility ends at close + keep_for at the latest
    (``_eligibility_ends_apply``). One review.applied event per item (bulk-written: whose access, and the
    eligibility's old and new end when the close moved it) and one review.closed event. Locks the
    campaign, then its items (so a decision in flight is either in or refused), then their eligibility.
    Immutable afterwards. Raises NotAuthorized or TransitionNotAllowed (already closed)."""
    if actor is not None and not permissions.is_auditor(actor):
        raise NotAuthorized("Only auditors close access reviews.")
    now = clock.now()
    with transaction.atomic():
        campaign = ReviewCampaign.objects.select_for_update(no_key=True, of=("self",)).get(pk=campaign_id)
        if campaign.status != Status.OPEN:
            raise TransitionNotAllowed("This campaign is already closed.")
        campaign.status, campaign.closed_at, campaign.closed_by = Status.CLOSED, now, actor
        campaign.save(update_fields=["status", "closed_at", "closed_by"])
        items = list(
            campaign.items.select_for_update(no_key=True, of=("self",))
            .only(
                "pk",
                "campaign_id",
                "decision",
                "comment",
                "eligibility_id",
                "grant_id",
                "role_id",
                "subject_user_id",
                "subject_group_id",
                "decided_by_id",
                "subject_user__username",
                "subject_group__name",
            )
            .select_related("subject_user", "subject_group")
        )
        by_outcome = _close_plan(campaign, items)
        revoked_eligibility = [i.eligibility_id for i in by_outcome["revoked"] if i.eligibility_id]
        ends = _eligibility_ends_apply(
            revoked_eligibility,
            [i.eligibility_id for i in by_outcome["kept"] if i.eligibility_id],
            now=now,
            keep_for=campaign.keep_for,
        )
        for outcome, group in by_outcome.items():
            ReviewItem.objects.filter(pk__in=[i.pk for i in group]).update(outcome=outcome, applied_at=now)
        label = actor_label(actor, None if actor else job)
        event_record_bulk(
            [
                AccessEvent(
                    event_type=Type.REVIEW_APPLIED,
                    actor=actor,
                    actor_label=label,
                    role_id=item.role_id,
                    grant_id=item.grant_id,
                    occurred_at=now,
                    reason=item.reason,
                    data={
                        "campaign_id": campaign.pk,
                        "item_id": item.pk,
                        "outcome": outcome,
                        "answered": bool(item.decision),
                        **_about(item),
                        **_ends_data(ends.get(item.eligibility_id or 0)),
                    },
                )
                for outcome, group in by_outcome.items()
                for item in group
            ]
        )
        _revoke_grants_from(by_outcome["revoked"], job=job, now=now, closer=actor)
        if revoked_eligibility:
            request_services.access_request_withdraw_ineligible(
                now, role_ids=sorted({i.role_id for i in by_outcome["revoked"] if i.eligibility_id}), job=job
            )
        event_record(
            Type.REVIEW_CLOSED,
            actor=actor,
            job=None if actor else job,
            client_address=client_address,
            reason=campaign.name,
            data={"campaign_id": campaign.pk, **{k: len(v) for k, v in by_outcome.items() if v}},
        )
        return campaign


def review_campaigns_close_due(now: datetime) -> int:
    """The sweep closes open campaigns at their due date plus grace period (job "review-close")."""
    due = list(
        ReviewCampaign.objects.filter(status=Status.OPEN)
        .annotate(closes=ExpressionWrapper(F("due_at") + F("grace"), output_field=DateTimeField()))
        .filter(closes__lte=now)
        .values_list("pk", flat=True)
    )
    for pk in due:
        try:
            review_campaign_close(None, pk)
        except TransitionNotAllowed:
            continue  # closed meanwhile by an auditor
    return len(due)


def review_reminders_due(now: datetime) -> int:
    """The sweep tells reviewers with unanswered items once at half time, and once when the due date has
    passed (reviewers and auditors; the campaign closes itself after its grace period). Each reminder is
    claimed by a conditional UPDATE, so parallel sweeps send it once."""
    sent = 0
    for campaign in ReviewCampaign.objects.filter(status=Status.OPEN).filter(
        half_reminded_at__isnull=True, due_at__gt=now
    ):
        if now >= campaign.created_at + (campaign.due_at - campaign.created_at) / 2:
            with transaction.atomic():
                if ReviewCampaign.objects.filter(pk=campaign.pk, half_reminded_at__isnull=True).update(
                    half_reminded_at=now
                ):
                    _notify_after_commit("review_half_time", campaign.pk)
                    sent += 1
    for pk in ReviewCampaign.objects.filter(
        status=Status.OPEN, due_at__lte=now, overdue_reminded_at__isnull=True
    ).values_list("pk", flat=True):
        with transaction.atomic():
            if ReviewCampaign.objects.filter(pk=pk, overdue_reminded_at__isnull=True).update(overdue_reminded_at=now):
                _notify_after_commit("review_overdue", pk)
                sent += 1
    return sent


def review_campaign_quarterly(now: datetime, *, due_in: timedelta | None = None) -> ReviewCampaign | None:
    """Beat, on the first day of each quarter: one campaign over every system, once per quarter — also
    with two beats, or a task delivered twice: the campaign carries its period ("2026-Q4"), which the
    database holds unique (``campaign_one_per_period``). The check below only saves work; a second
    creator that passed it at the same moment waits for the first one's commit on the unique index,
    then fails and writes nothing (no second campaign, no second set of items or events)."""
    due_in = timedelta(days=settings.REVIEW_DUE_DAYS) if due_in is None else due_in
    quarter = (now.month - 1) // 3 + 1
    name = f"Quarterly access review {now.year} Q{quarter}"
    period = f"{now.year}-Q{quarter}"
    if ReviewCampaign.objects.filter(Q(period=period) | Q(name=name, created_by__isnull=True)).exists():
        return None
    systems = list(System.objects.all())
    if not systems:
        return None
    try:
        return review_campaign_create(
            None, name=name, systems=systems, due_at=now + due_in, job="quarterly-review", period=period
        )
    except IntegrityError:
        return None  # opened by another beat (or delivery) at the same moment
