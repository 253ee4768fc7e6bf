"""``manage.py createsuperuser``: Django's command, recording the account in the ledger.

Every account is evidence (docs/DECISIONS.md, "Admin changes are evidence too"): the superuser made here —
interactively, or with ``--noinput`` and ``DJANGO_SUPERUSER_*`` variables — and its ``user.created`` event
commit together, or neither does. No person acts (whoever runs the command has the server's rights), so the
event names the job ``manage.py createsuperuser`` and says it made a superuser. Wins over Django's command of
the same name because ``accessgov`` precedes ``django.contrib.auth`` in INSTALLED_APPS.

The name follows the rule for every account's name (``services.usernames``: no look-alike of another person's
name, no other account's name in another case): checked as it is given, so a person at the terminal is asked again
at once, and checked again under the username lock once the account is made, in the same transaction — without
holding that lock while someone types the rest (other accounts' creation would wait for them).
"""

import os

from django.contrib.auth.management.commands import createsuperuser
from django.core.management import CommandError
from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models import Max

from accessgov.exceptions import PolicyViolation
from accessgov.services import usernames
from accessgov.services import users as user_services

JOB = "manage.py createsuperuser"


class Command(createsuperuser.Command):
    help = "Create a superuser (Django's command), recorded in the ledger as user.created."

    def _validate_username(self, username, verbose_field_name, database):
        error = super()._validate_username(username, verbose_field_name, database)
        if error:
            return error
        problem = usernames.username_problem(self.UserModel.normalize_username(username), lock=False)
        return f"Error: That {verbose_field_name} is refused: {problem}." if problem else None

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
            super().handle(*args, **{**options, "verbosity": 0})  # "created" is said below, once it stands
            field = self.UserModel.USERNAME_FIELD
            username = self._typed_username or options.get(field) or os.environ.get(f"DJANGO_SUPERUSER_{field.upper()}")
            if not username:
                return  # nothing was made (no terminal to ask on)
            username = self.UserModel.normalize_username(username)
            user = manager.filter(pk__gt=before, **{field: username}).first()
            if user is None:
                return  # nothing was made
            try:
                usernames.ensure_username_allowed(user.get_username(), user_id=user.pk)
            except PolicyViolation as error:
                raise CommandError(str(error)) from error
            user_services.user_record_created(user, job=JOB, reason="Superuser created with manage.py createsuperuser")
        if options["verbosity"] >= 1:
            self.stdout.write("Superuser created successfully.")
