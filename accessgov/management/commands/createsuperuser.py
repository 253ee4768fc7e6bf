"""``manage.py createsuperuser``: Django's command, recording the account in the ledger.

Every account is evidence (docs/DECISIONS.md, "Admin changes are evidence too"): the superuser made here —
interactively, or with ``--noinput`` and ``DJANGO_SUPERUSER_*`` variables — and its ``user.created`` event
commit together, or neither does. No person acts (whoever runs the command has the server's rights), so the
event names the job ``manage.py createsuperuser`` and says it made a superuser. Wins over Django's command of
the same name because ``accessgov`` precedes ``django.contrib.auth`` in INSTALLED_APPS.
"""

import os

from django.contrib.auth.management.commands import createsuperuser
from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models import Max

from accessgov.services import users as user_services

JOB = "manage.py createsuperuser"


class Command(createsuperuser.Command):
    help = "Create a superuser (Django's command), recorded in the ledger as user.created."

    def get_input_data(self, field, message, default=None):
        value = super().get_input_data(field, message, default)
        if field is self.username_field and value:
            self._typed_username = value  # the last one typed is the one used (a rejected one is asked again)
        return value

    def handle(self, *args, **options):
        database = options.get("database") or DEFAULT_DB_ALIAS
        self._typed_username = None
        with transaction.atomic(using=database):
            manager = self.UserModel._default_manager.db_manager(database)
            before = manager.aggregate(last=Max("pk"))["last"] or 0
            super().handle(*args, **options)
            field = self.UserModel.USERNAME_FIELD
            username = self._typed_username or options.get(field) or os.environ.get(f"DJANGO_SUPERUSER_{field.upper()}")
            if not username:
                return  # nothing was made (no terminal to ask on)
            username = self.UserModel.normalize_username(username)
            user = manager.filter(pk__gt=before, **{field: username}).first()
            if user is None:
                return  # nothing was made
            user_services.user_record_created(user, job=JOB, reason="Superuser created with manage.py createsuperuser")
