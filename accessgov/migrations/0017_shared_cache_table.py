"""The table of the "shared" cache (settings.CACHES) when it is the database: the API throttle counts
there, for every web and worker process. ``migrate`` makes it, so no deployment needs a second
command (``createcachetable`` is idempotent: an existing table is left alone)."""

from django.core.management import call_command
from django.db import migrations


def create_cache_tables(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [
        ("accessgov", "0016_integrity_of_rules"),
    ]

    operations = [
        migrations.RunPython(create_cache_tables, migrations.RunPython.noop),
    ]
