"""Seal events written before the chain existed, and make the ledger append-only in PostgreSQL itself:
a trigger refuses UPDATE and DELETE for every database user and TRUNCATE for every non-superuser
(the application's user must not be a superuser). A superuser can still disable the trigger; the hash
chain (manage.py verify_audit) catches what they change."""

from django.db import migrations

GENESIS = "0" * 64

PROTECT_SQL = """
CREATE OR REPLACE FUNCTION accessgov_ledger_is_append_only() RETURNS trigger AS $$
BEGIN
    -- A superuser can disable this trigger anyway; letting them TRUNCATE keeps Django's test flush
    -- working. The application must not connect as a superuser (docs/OPERATIONS.md).
    IF TG_OP = 'TRUNCATE' AND (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'accessgov_accessevent is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS accessgov_ledger_no_update_delete ON accessgov_accessevent;
CREATE TRIGGER accessgov_ledger_no_update_delete
    BEFORE UPDATE OR DELETE ON accessgov_accessevent
    FOR EACH ROW EXECUTE FUNCTION accessgov_ledger_is_append_only();
DROP TRIGGER IF EXISTS accessgov_ledger_no_truncate ON accessgov_accessevent;
CREATE TRIGGER accessgov_ledger_no_truncate
    BEFORE TRUNCATE ON accessgov_accessevent
    FOR EACH STATEMENT EXECUTE FUNCTION accessgov_ledger_is_append_only();
"""

UNPROTECT_SQL = """
DROP TRIGGER IF EXISTS accessgov_ledger_no_update_delete ON accessgov_accessevent;
DROP TRIGGER IF EXISTS accessgov_ledger_no_truncate ON accessgov_accessevent;
DROP FUNCTION IF EXISTS accessgov_ledger_is_append_only();
"""


def seal_existing(apps, schema_editor):
    from accessgov.models import AccessEvent as RealEvent

    AccessEvent = apps.get_model("accessgov", "AccessEvent")
    prev = GENESIS
    sequence = 0
    for event in AccessEvent.objects.filter(sequence__isnull=True).order_by("pk").iterator():
        sequence += 1
        real = RealEvent(**{f.attname: getattr(event, f.attname) for f in RealEvent._meta.concrete_fields})
        real.sequence = sequence
        digest = real.compute_hash(prev)
        AccessEvent.objects.filter(pk=event.pk).update(sequence=sequence, prev_hash=prev, hash=digest)
        prev = digest


def protect(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PROTECT_SQL, params=None)


def unprotect(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(UNPROTECT_SQL, params=None)


class Migration(migrations.Migration):
    dependencies = [("accessgov", "0003_ledger_chain")]

    operations = [
        migrations.RunPython(seal_existing, migrations.RunPython.noop),
        migrations.RunPython(protect, unprotect),
    ]
