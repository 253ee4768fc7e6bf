"""Migration 0033 (outbox items numbered instead of keyed by text): existing items keep their keys, the
migration goes back and forth, and the key still shows where people look for it."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from accessgov.models import Grant, OutboxItem
from accessgov.services import access_requests as ar
from tests.conftest import sign_in

BEFORE = [("accessgov", "0032_sweep_write_costs")]
AFTER = [("accessgov", "0033_outbox_number_key")]


def latest():
    """Every migration of the app: the schema the rest of the suite expects."""
    loader = MigrationExecutor(connection).loader
    loader.build_graph()
    return loader.graph.leaf_nodes("accessgov")


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_items_written_before_the_migration_keep_their_keys_and_the_migration_reverses(world):
    access_request = ar.access_request_submit(
        world.requester, role=world.role, duration=timedelta(hours=1), justification="Investigating INC-42"
    )
    ar.access_request_approve(world.approver, access_request.pk)
    grant = Grant.objects.get(access_request=access_request)
    try:
        old = migrate(BEFORE).get_model("accessgov", "OutboxItem")
        # Going back wrote the key of the item made under 0033 (its apply item, number 1).
        assert list(old.objects.values_list("idempotency_key", flat=True)) == [f"grant-{grant.pk}-apply-1"]
        for number in (1, 2, 12):
            old.objects.create(grant_id=grant.pk, action="remove", idempotency_key=f"grant-{grant.pk}-remove-{number}")
        migrate(AFTER)
    finally:
        migrate(latest())  # the schema the rest of the suite expects, whatever happened above

    assert sorted((i.action, i.number, i.idempotency_key) for i in OutboxItem.objects.filter(grant=grant)) == [
        ("apply", 1, f"grant-{grant.pk}-apply-1"),
        ("remove", 1, f"grant-{grant.pk}-remove-1"),
        ("remove", 2, f"grant-{grant.pk}-remove-2"),
        ("remove", 12, f"grant-{grant.pk}-remove-12"),
    ]
    # One item per (grant, action, number): the key's uniqueness, now held by the integer key.
    with pytest.raises(IntegrityError), transaction.atomic():
        OutboxItem.objects.create(grant=grant, action="remove", number=2)


@pytest.mark.django_db
def test_the_admin_lists_outbox_items_by_their_key(world, make_user):
    access_request = ar.access_request_submit(
        world.requester, role=world.role, duration=timedelta(hours=1), justification="Investigating INC-42"
    )
    ar.access_request_approve(world.approver, access_request.pk)
    item = OutboxItem.objects.get()
    admin = sign_in(Client(), make_user("root", is_staff=True, is_superuser=True))

    listing = admin.get("/admin/accessgov/outboxitem/")
    assert listing.status_code == 200
    assert f"grant-{item.grant_id}-apply-1" in listing.content.decode()
    assert admin.get(f"/admin/accessgov/outboxitem/{item.pk}/change/").status_code == 200
