"""Issue 22, the expiry sweep's outbox rows: one index fewer per row.

An outbox item was unique by its text key ``grant-<grant>-<action>-<n>`` and also indexed by grant: two
index entries per row, one of them text. The item now stores its ``number`` and is unique by
(grant, action, number) — the same rule, in one index that also serves every lookup by grant (the
PROTECT check of a grant's deletion, the next number's count). The key is spelled out from those three
(``OutboxItem.idempotency_key``) for targets, events and logs, as before.

Existing items keep their keys: every key was written as ``grant-<grant>-<action>-<n>``, and the number is
read from its end (almost all are 1, the default, so only the others are rewritten).
"""

from django.db import migrations, models
from django.db.models import CharField, F, Value
from django.db.models.functions import Cast, Concat


def numbers_from_keys(apps, schema_editor):
    OutboxItem = apps.get_model("accessgov", "OutboxItem")
    others = []
    for item in OutboxItem.objects.exclude(idempotency_key__endswith="-1").only("pk", "idempotency_key").iterator():
        item.number = int(item.idempotency_key.rsplit("-", 1)[1])
        others.append(item)
    OutboxItem.objects.bulk_update(others, ["number"], batch_size=1000)


def keys_from_numbers(apps, schema_editor):
    """Back to 0032: the keys written again from the numbers, before the column is required again."""
    OutboxItem = apps.get_model("accessgov", "OutboxItem")
    OutboxItem.objects.update(
        idempotency_key=Concat(
            Value("grant-"), Cast("grant_id", CharField()), Value("-"), F("action"), Value("-"), Cast("number", CharField())
        )
    )


class Migration(migrations.Migration):
    dependencies = [
        ("accessgov", "0032_sweep_write_costs"),
    ]

    operations = [
        migrations.AddField(
            model_name="outboxitem",
            name="number",
            field=models.PositiveIntegerField(default=1),
            preserve_default=False,
        ),
        migrations.RemoveConstraint(
            model_name="outboxitem",
            name="outbox_idempotency_key_unique",
        ),
        # Nullable on its way out, so that going back can add it empty and write the keys before it is
        # required again.
        migrations.AlterField(
            model_name="outboxitem",
            name="idempotency_key",
            field=models.CharField(max_length=100, null=True),
        ),
        migrations.RunPython(numbers_from_keys, keys_from_numbers, elidable=True),
        migrations.RemoveField(
            model_name="outboxitem",
            name="idempotency_key",
        ),
        migrations.AlterField(
            model_name="outboxitem",
            name="grant",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=models.deletion.PROTECT,
                related_name="outbox_items",
                to="accessgov.grant",
            ),
        ),
        migrations.AddConstraint(
            model_name="outboxitem",
            constraint=models.UniqueConstraint(
                fields=("grant", "action", "number"), name="outbox_grant_action_number_unique"
            ),
        ),
    ]
