"""Migration 0033 (outbox items numbered instead of keyed by text): existing items keep their keys, and
the migration goes back and forth."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from accessgov.models import Grant, OutboxItem
from accessgov.services import access_requests as ar

BEFORE = [("accessgov", "0032_sweep_write_costs")]
AFTER = [("accessgov", "0033_outbox_number_key")]


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
        migrate(AFTER)  # the schema the rest of the suite expects, whatever happened above

    assert sorted((i.action, i.number, i.idempotency_key) for i in OutboxItem.objects.filter(grant=grant)) == [
        ("apply", 1, f"grant-{grant.pk}-apply-1"),
        ("remove", 1, f"grant-{grant.pk}-remove-1"),
        ("remove", 2, f"grant-{grant.pk}-remove-2"),
        ("remove", 12, f"grant-{grant.pk}-remove-12"),
    ]
    # One item per (grant, action, number): the key's uniqueness, now held by the integer key.
    with pytest.raises(IntegrityError), transaction.atomic():
        OutboxItem.objects.create(grant=grant, action="remove", number=2)
