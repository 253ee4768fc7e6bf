"""Issue 22, the expiry sweep's writes: fewer index entries and no row locks for the ledger's and the
outbox's reference checks.

- Indexes no query needs any more: the outbox key's second (LIKE) index (a unique CharField gets one on
  PostgreSQL; the key is unique by a constraint now, the same unique index), and the null entries of
  ``done_by`` and of the events' ``actor`` (automation's rows: every row a sweep writes) — both indexed
  where set.
- The reference checks of migration 0030 locked every named row FOR KEY SHARE (a lock written into each
  request's tuple: ≈ a quarter of the sweep's outbox and event writes). In a READ COMMITTED transaction
  (Django's default, the application's only level) they now take one shared transaction-level advisory
  lock and check that the rows exist; deleting a referenced row (or changing its id) takes the same lock
  exclusively before its own check. Either the insert's check runs after the delete committed (a fresh
  snapshot per statement: it sees the row gone and fails), or the delete waits for the inserting
  transaction and its check sees the new reference (and fails): the foreign keys' guarantees, with one
  lock per transaction instead of one per row. A transaction at REPEATABLE READ or SERIALIZABLE keeps the
  row locks (its snapshot would not see a delete that committed while it waited for the lock).
PostgreSQL only, like 0030.
"""

import importlib
import re

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

# Not the ledger's lock (ledger/record.py): "ACCREFKY".
REFERENCES_LOCK_KEY = 0x414343524546_4B59

CHECKS_SQL = f"""
CREATE OR REPLACE FUNCTION accessgov_references_held(parent text, ids bigint[]) RETURNS bigint AS $$
DECLARE
    held bigint;
BEGIN
    IF ids IS NULL THEN
        RETURN 0;
    END IF;
    IF current_setting('transaction_isolation') = 'read committed' THEN
        PERFORM pg_advisory_xact_lock_shared({REFERENCES_LOCK_KEY});
        EXECUTE format('SELECT count(*) FROM %I p WHERE p.id = ANY($1)', parent) INTO held USING ids;
    ELSE
        EXECUTE format('SELECT count(*) FROM (SELECT FROM %I p WHERE p.id = ANY($1) FOR KEY SHARE OF p) s', parent)
            INTO held USING ids;
    END IF;
    RETURN held;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION accessgov_referenced_rows_kept() RETURNS trigger AS $$
DECLARE
    i int := 0;
    referenced bigint;
BEGIN
    PERFORM pg_advisory_xact_lock({REFERENCES_LOCK_KEY});
    WHILE i < TG_NARGS LOOP
        IF TG_LEVEL = 'STATEMENT' THEN
            EXECUTE format('SELECT min(o.id) FROM old_rows o WHERE EXISTS (SELECT 1 FROM %I r WHERE r.%I = o.id)',
                           TG_ARGV[i], TG_ARGV[i + 1]) INTO referenced;
        ELSE
            EXECUTE format('SELECT $1 FROM %I r WHERE r.%I = $1 LIMIT 1', TG_ARGV[i], TG_ARGV[i + 1])
                INTO referenced USING OLD.id;
        END IF;
        IF referenced IS NOT NULL THEN
            RAISE EXCEPTION 'update or delete on table "%" violates the reference from "%"', TG_TABLE_NAME, TG_ARGV[i]
                USING ERRCODE = 'foreign_key_violation',
                      DETAIL = format('Key (id)=(%s) is still referenced from table "%s".', referenced, TG_ARGV[i]);
        END IF;
        i := i + 2;
    END LOOP;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
"""  # noqa: S608 - fixed SQL; the one value is a constant


def lock_free_checks(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CHECKS_SQL, params=None)


def row_lock_checks(apps, schema_editor):
    """Back to 0030's two functions (its other objects are unchanged)."""
    if schema_editor.connection.vendor == "postgresql":
        checks = importlib.import_module("accessgov.migrations.0030_sweep_reference_checks").CHECKS_SQL
        for name in ("accessgov_references_held", "accessgov_referenced_rows_kept"):
            match = re.search(rf"CREATE OR REPLACE FUNCTION {name}\(.*?LANGUAGE plpgsql;", checks, re.S)
            schema_editor.execute(match.group(0), params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("accessgov", "0031_grant_removal_pending_index"),
    ]

    operations = [
        migrations.AlterField(
            model_name="accessevent",
            name="actor",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="outboxitem",
            name="done_by",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="outboxitem",
            name="idempotency_key",
            field=models.CharField(max_length=100),
        ),
        migrations.AddIndex(
            model_name="accessevent",
            index=models.Index(condition=models.Q(("actor__isnull", False)), fields=["actor"], name="event_actor"),
        ),
        migrations.AddIndex(
            model_name="outboxitem",
            index=models.Index(
                condition=models.Q(("done_by__isnull", False)), fields=["done_by"], name="outbox_done_by"
            ),
        ),
        migrations.AddConstraint(
            model_name="outboxitem",
            constraint=models.UniqueConstraint(fields=("idempotency_key",), name="outbox_idempotency_key_unique"),
        ),
        migrations.RunPython(lock_free_checks, row_lock_checks),
    ]
