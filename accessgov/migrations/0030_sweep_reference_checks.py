"""The ledger's and the outbox's references are checked by PostgreSQL once per statement, set-based,
instead of by Django's deferred foreign-key triggers once per row at commit (issue 22: those checks were
a quarter of the expiry sweep — four per grant: the event's grant, request and role, the outbox row's
grant).

The guarantees are the foreign keys' own, enforced by triggers:
- an INSERT of events or outbox rows whose actor, request, grant or role does not exist fails
  (SQLSTATE 23503 foreign_key_violation, at the end of the statement rather than at commit); the rows it
  names are locked FOR KEY SHARE as the foreign-key check locks them, so a concurrent DELETE of one waits
  for this transaction and then fails its own check;
- a DELETE of a user, request, grant or role that an event or outbox row names fails (23503), as does
  changing the id of one (the ledger's rows cannot change at all: 0004; an outbox row's grant only to an
  existing grant).
PostgreSQL only, like the ledger's append-only trigger (0004); on SQLite (development, the demo) the
ORM's PROTECT is what refuses such deletes, as before for every path the application has.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

CHECKS_SQL = r"""
CREATE OR REPLACE FUNCTION accessgov_reference_missing(child text, col text, parent text, ids bigint[])
RETURNS void AS $$
DECLARE
    missing bigint;
BEGIN
    EXECUTE format('SELECT min(i) FROM unnest($1) i WHERE NOT EXISTS (SELECT 1 FROM %I p WHERE p.id = i)', parent)
        INTO missing USING ids;
    RAISE EXCEPTION 'insert or update on table "%" violates its reference to "%"', child, parent
        USING ERRCODE = 'foreign_key_violation',
              DETAIL = format('Key (%s)=(%s) is not present in table "%s".', col, missing, parent);
END;
$$ LANGUAGE plpgsql;

-- How many of ``ids`` exist in ``parent``, each now locked FOR KEY SHARE (as a foreign-key check locks
-- the row it finds, so that nobody deletes it before this transaction ends), in one statement.
CREATE OR REPLACE FUNCTION accessgov_references_held(parent text, ids bigint[]) RETURNS bigint AS $$
DECLARE
    held bigint;
BEGIN
    IF ids IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE format('SELECT count(*) FROM (SELECT FROM %I p WHERE p.id = ANY($1) FOR KEY SHARE OF p) s', parent)
        INTO held USING ids;
    RETURN held;
END;
$$ LANGUAGE plpgsql;

-- After each INSERT statement into the ledger: every actor, request, grant and role the new rows name
-- exists and stays (accessgov_references_held), checked once per table for the whole statement instead
-- of one query per row.
CREATE OR REPLACE FUNCTION accessgov_event_references_exist() RETURNS trigger AS $$
DECLARE
    actor_ids bigint[];
    request_ids bigint[];
    grant_ids bigint[];
    role_ids bigint[];
BEGIN
    SELECT array_agg(DISTINCT actor_id) FILTER (WHERE actor_id IS NOT NULL),
           array_agg(DISTINCT access_request_id) FILTER (WHERE access_request_id IS NOT NULL),
           array_agg(DISTINCT grant_id) FILTER (WHERE grant_id IS NOT NULL),
           array_agg(DISTINCT role_id) FILTER (WHERE role_id IS NOT NULL)
      INTO actor_ids, request_ids, grant_ids, role_ids
      FROM new_rows;
    IF accessgov_references_held('accessgov_user', actor_ids) < cardinality(actor_ids) THEN
        PERFORM accessgov_reference_missing(TG_TABLE_NAME, 'actor_id', 'accessgov_user', actor_ids);
    END IF;
    IF accessgov_references_held('accessgov_accessrequest', request_ids) < cardinality(request_ids) THEN
        PERFORM accessgov_reference_missing(TG_TABLE_NAME, 'access_request_id', 'accessgov_accessrequest', request_ids);
    END IF;
    IF accessgov_references_held('accessgov_grant', grant_ids) < cardinality(grant_ids) THEN
        PERFORM accessgov_reference_missing(TG_TABLE_NAME, 'grant_id', 'accessgov_grant', grant_ids);
    END IF;
    IF accessgov_references_held('accessgov_role', role_ids) < cardinality(role_ids) THEN
        PERFORM accessgov_reference_missing(TG_TABLE_NAME, 'role_id', 'accessgov_role', role_ids);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER accessgov_event_references
    AFTER INSERT ON accessgov_accessevent REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION accessgov_event_references_exist();

CREATE OR REPLACE FUNCTION accessgov_outbox_references_exist() RETURNS trigger AS $$
DECLARE
    grant_ids bigint[];
BEGIN
    SELECT array_agg(DISTINCT grant_id) INTO grant_ids FROM new_rows;
    IF accessgov_references_held('accessgov_grant', grant_ids) < cardinality(grant_ids) THEN
        PERFORM accessgov_reference_missing(TG_TABLE_NAME, 'grant_id', 'accessgov_grant', grant_ids);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER accessgov_outbox_references
    AFTER INSERT ON accessgov_outboxitem REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION accessgov_outbox_references_exist();

-- An outbox row's grant may change only to a grant that exists (the ORM's save() writes the column
-- unchanged: the WHEN clause keeps that free).
CREATE OR REPLACE FUNCTION accessgov_outbox_grant_exists() RETURNS trigger AS $$
BEGIN
    PERFORM FROM accessgov_grant p WHERE p.id = NEW.grant_id FOR KEY SHARE OF p;
    IF NOT FOUND THEN
        PERFORM accessgov_reference_missing(TG_TABLE_NAME, 'grant_id', 'accessgov_grant', ARRAY[NEW.grant_id]);
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER accessgov_outbox_grant_changed
    BEFORE UPDATE OF grant_id ON accessgov_outboxitem
    FOR EACH ROW WHEN (OLD.grant_id IS DISTINCT FROM NEW.grant_id)
    EXECUTE FUNCTION accessgov_outbox_grant_exists();

-- A user, request, grant or role named by an event or an outbox row is never deleted, nor its id
-- changed. TG_ARGV: pairs of (referencing table, column). After the DELETE statement, with a fresh
-- snapshot: an insert that named one of the rows and committed while this DELETE waited on its lock is
-- seen here.
CREATE OR REPLACE FUNCTION accessgov_referenced_rows_kept() RETURNS trigger AS $$
DECLARE
    i int := 0;
    referenced bigint;
BEGIN
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
CREATE TRIGGER accessgov_user_kept AFTER DELETE ON accessgov_user REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION accessgov_referenced_rows_kept('accessgov_accessevent', 'actor_id');
CREATE TRIGGER accessgov_request_kept AFTER DELETE ON accessgov_accessrequest REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION accessgov_referenced_rows_kept('accessgov_accessevent', 'access_request_id');
CREATE TRIGGER accessgov_grant_kept AFTER DELETE ON accessgov_grant REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION accessgov_referenced_rows_kept(
        'accessgov_accessevent', 'grant_id', 'accessgov_outboxitem', 'grant_id');
CREATE TRIGGER accessgov_role_kept AFTER DELETE ON accessgov_role REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION accessgov_referenced_rows_kept('accessgov_accessevent', 'role_id');
CREATE TRIGGER accessgov_user_id_kept AFTER UPDATE OF id ON accessgov_user
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION accessgov_referenced_rows_kept('accessgov_accessevent', 'actor_id');
CREATE TRIGGER accessgov_request_id_kept AFTER UPDATE OF id ON accessgov_accessrequest
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION accessgov_referenced_rows_kept('accessgov_accessevent', 'access_request_id');
CREATE TRIGGER accessgov_grant_id_kept AFTER UPDATE OF id ON accessgov_grant
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION accessgov_referenced_rows_kept(
        'accessgov_accessevent', 'grant_id', 'accessgov_outboxitem', 'grant_id');
CREATE TRIGGER accessgov_role_id_kept AFTER UPDATE OF id ON accessgov_role
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION accessgov_referenced_rows_kept('accessgov_accessevent', 'role_id');
"""

DROP_SQL = """
DROP TRIGGER IF EXISTS accessgov_event_references ON accessgov_accessevent;
DROP TRIGGER IF EXISTS accessgov_outbox_references ON accessgov_outboxitem;
DROP TRIGGER IF EXISTS accessgov_outbox_grant_changed ON accessgov_outboxitem;
DROP TRIGGER IF EXISTS accessgov_user_kept ON accessgov_user;
DROP TRIGGER IF EXISTS accessgov_request_kept ON accessgov_accessrequest;
DROP TRIGGER IF EXISTS accessgov_grant_kept ON accessgov_grant;
DROP TRIGGER IF EXISTS accessgov_role_kept ON accessgov_role;
DROP TRIGGER IF EXISTS accessgov_user_id_kept ON accessgov_user;
DROP TRIGGER IF EXISTS accessgov_request_id_kept ON accessgov_accessrequest;
DROP TRIGGER IF EXISTS accessgov_grant_id_kept ON accessgov_grant;
DROP TRIGGER IF EXISTS accessgov_role_id_kept ON accessgov_role;
DROP FUNCTION IF EXISTS accessgov_event_references_exist();
DROP FUNCTION IF EXISTS accessgov_outbox_references_exist();
DROP FUNCTION IF EXISTS accessgov_outbox_grant_exists();
DROP FUNCTION IF EXISTS accessgov_referenced_rows_kept();
DROP FUNCTION IF EXISTS accessgov_reference_missing(text, text, text, bigint[]);
DROP FUNCTION IF EXISTS accessgov_references_held(text, bigint[]);
"""


def add_checks(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CHECKS_SQL, params=None)


def drop_checks(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_SQL, params=None)


class Migration(migrations.Migration):
    dependencies = [("accessgov", "0029_github_ticket_provider")]

    # The checks are in place before the foreign keys go (one transaction on PostgreSQL either way).
    operations = [
        migrations.RunPython(add_checks, drop_checks),
        migrations.AlterField(
            model_name="accessevent",
            name="access_request",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="events",
                to="accessgov.accessrequest",
            ),
        ),
        migrations.AlterField(
            model_name="accessevent",
            name="actor",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="accessevent",
            name="grant",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="events",
                to="accessgov.grant",
            ),
        ),
        migrations.AlterField(
            model_name="accessevent",
            name="role",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="accessgov.role",
            ),
        ),
        migrations.AlterField(
            model_name="outboxitem",
            name="grant",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="outbox_items",
                to="accessgov.grant",
            ),
        ),
    ]
