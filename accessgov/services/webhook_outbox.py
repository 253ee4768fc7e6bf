"""Outbound event webhooks, the enqueue half: which subscriptions an access event matches, and one
WebhookDelivery per match written in the transaction of the change. ``services.events`` calls this for
every event it records (single and bulk) — one query to find the subscriptions (a transaction's later
events of the same role reuse its answer: ``transaction_memo``), one INSERT when any match, nothing
cached between transactions. A rolled-back change leaves no delivery; a broker outage
loses none (the sweep drains). Sending is ``services.webhooks``; this module imports no service, so the
ledger writer and the webhook sender do not import each other."""

from collections import defaultdict

from django.db.models import Q
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from accessgov import clock, dbsql, transaction_memo
from accessgov.models import AccessEvent, EventWebhookSubscription, WebhookDelivery
from accessgov.precompiled import Precompiled
from accessgov.services import after_commit

Status = WebhookDelivery.Status
TASK_CHUNK = 50
# Events about the webhooks themselves are never delivered (a redelivery must not create deliveries).
UNDELIVERED_PREFIX = "webhook."
DELIVERABLE_TYPES = tuple(t for t in AccessEvent.Type.values if not t.startswith(UNDELIVERED_PREFIX))


# --- Subscriptions ------------------------------------------------------------------------------


def event_type_matches(patterns: list[str], event_type: str) -> bool:
    """``*`` matches every deliverable type, ``family.*`` every type of the family, anything else exactly."""
    if event_type.startswith(UNDELIVERED_PREFIX):
        return False
    for pattern in patterns:
        if pattern in ("*", event_type):
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


def event_type_pattern_problems(patterns: list[str]) -> list[str]:
    """What is wrong with a subscription's event type patterns (empty list: nothing)."""
    if not patterns:
        return ["Choose at least one event type (for example request.* or grant.expired)."]
    return [
        f"{pattern!r} matches no event type that webhooks deliver."
        for pattern in patterns
        if not any(event_type_matches([pattern], event_type) for event_type in DELIVERABLE_TYPES)
    ]


# --- Enqueue (in the caller's transaction) ------------------------------------------------------


def _subscriptions(scope: Q):
    return EventWebhookSubscription.objects.filter(scope, is_active=True).values_list(
        "pk", "event_types", "system__roles"
    )


# Every recorded event asks which subscriptions match (accessgov/precompiled.py: compiled once).
SUBSCRIPTIONS_EVERYWHERE = Precompiled(
    "webhook_subscriptions_everywhere", lambda: _subscriptions(Q(system__isnull=True))
)
SUBSCRIPTIONS_FOR_ROLE = Precompiled(
    "webhook_subscriptions_for_role",
    lambda role_id: _subscriptions(Q(system__isnull=True) | Q(system__roles=role_id)),
    role_id=int,
)


def webhook_deliveries_enqueue(events: list[AccessEvent]) -> list[int]:
    """Write one delivery per (event, matching active subscription) in the caller's transaction and
    schedule their sending after the commit (task ids only, robust). Called by services.events for
    every recorded event, single or bulk; ``events`` must be saved. One SELECT per call whatever the
    number of events, plus one INSERT when something matches. Returns the new delivery ids."""
    return webhook_deliveries_enqueue_refs([(event.pk, event.event_type, event.role_id) for event in events])


def webhook_deliveries_enqueue_refs(refs: list[tuple[int, str, int | None]]) -> list[int]:
    """``webhook_deliveries_enqueue`` for events given as (id, event_type, role_id): what the bulk
    event writer has at hand without a model instance per event."""
    refs = [ref for ref in refs if not ref[1].startswith(UNDELIVERED_PREFIX)]
    if not refs:
        return []
    role_ids = {role_id for _, _, role_id in refs if role_id is not None}
    # One row per global subscription (role None), and one per (system subscription, role of the batch).
    if not role_ids:
        rows = _remembered_for(None, SUBSCRIPTIONS_EVERYWHERE.list)
    elif len(role_ids) == 1:  # a single state change's events: precompiled
        role_id = next(iter(role_ids))
        rows = _remembered_for(role_id, lambda: SUBSCRIPTIONS_FOR_ROLE.list(role_id=role_id))
    else:
        rows = _subscriptions(Q(system__isnull=True) | Q(system__roles__in=role_ids))
    everywhere: list[tuple[int, list[str]]] = []
    per_role: dict[int, list[tuple[int, list[str]]]] = defaultdict(list)
    for subscription_id, patterns, role_id in rows:
        if role_id is None:
            everywhere.append((subscription_id, patterns))
        elif role_id in role_ids:
            per_role[role_id].append((subscription_id, patterns))
    if not everywhere and not per_role:
        return []
    pairs = _deliveries_for(refs, everywhere, per_role)
    if not pairs:
        return []
    ids = dbsql.webhook_deliveries_insert(pairs, clock.now())
    _send_after_commit(ids)
    return ids


_MEMO_KEY = "webhook_subscriptions"


def _remembered_for(role_id: int | None, read) -> list:
    """The subscriptions for events of ``role_id`` (None: of no role), read once per transaction: a state
    change's events (submitted, approved, activated) share their role."""
    by_role = transaction_memo.remembered(_MEMO_KEY, dict)
    if role_id not in by_role:
        by_role[role_id] = read()
    return by_role[role_id]


@receiver(post_save, sender=EventWebhookSubscription, dispatch_uid="accessgov-webhook-subscriptions-changed")
@receiver(post_delete, sender=EventWebhookSubscription, dispatch_uid="accessgov-webhook-subscriptions-deleted")
def _subscriptions_changed(**kwargs) -> None:
    """A subscription saved or deleted in this transaction: its later events read them again."""
    transaction_memo.forget(_MEMO_KEY)


def _deliveries_for(refs, everywhere, per_role) -> list[tuple[int, int]]:
    """(subscription id, event id) for every matching pair; the match is decided once per event type
    and subscription list, not once per event."""
    pairs: list[tuple[int, int]] = []
    matching: dict[tuple[str, int | None], list[int]] = {}
    for event_id, event_type, role_id in refs:
        key = (event_type, role_id)
        if key not in matching:
            subscription_ids: list[int] = []
            for subscription_id, patterns in [*everywhere, *per_role.get(role_id, [])]:
                if subscription_id not in subscription_ids and event_type_matches(patterns, event_type):
                    subscription_ids.append(subscription_id)
            matching[key] = subscription_ids
        pairs.extend((subscription_id, event_id) for subscription_id in matching[key])
    return pairs


def _send_after_commit(ids: list[int]) -> None:
    for start in range(0, len(ids), TASK_CHUNK):
        after_commit.enqueue("deliver_event_webhooks", ids[start : start + TASK_CHUNK])
