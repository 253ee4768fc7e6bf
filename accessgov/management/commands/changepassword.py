"""``manage.py changepassword``: Django's command, recording the change in the ledger.

A password set from the server's shell is evidence like one chosen through a recovery link: the new password
and its ``user.password_set`` event commit together, or neither does. No person acts (whoever runs the command
has the server's rights), so the event names the job ``manage.py changepassword`` and, in its data, whose
password it is. The prompts and their checks are Django's; the write is ``user_password_set_by_job`` (the row
locked, only the password saved: Django's own ``save()`` of the whole row, read before the operator typed,
would undo a deactivation made meanwhile). Wins over Django's command of the same name because ``accessgov``
precedes ``django.contrib.auth`` in INSTALLED_APPS.
"""

import getpass

from django.contrib.auth import get_user_model
from django.contrib.auth.management.commands import changepassword
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from accessgov.services import users as user_services

JOB = "manage.py changepassword"
MAX_TRIES = 3  # as Django's command


class Command(changepassword.Command):
    help = "Change a user's password (Django's command), recorded in the ledger as user.password_set."

    def handle(self, *args, **options):
        user_model = get_user_model()
        username = options["username"] or getpass.getuser()
        try:
            user = user_model._default_manager.using(options["database"]).get(**{user_model.USERNAME_FIELD: username})
        except user_model.DoesNotExist:
            raise CommandError(f"user '{username}' does not exist") from None
        self.stdout.write(f"Changing password for user '{user}'")
        try:
            password = self._typed_password(user)
        except EOFError:  # no terminal, nothing piped: Django's command ends in a traceback
            raise CommandError("No password to read: run it at a terminal, or pipe the password in twice.") from None
        user = user_services.user_password_set_by_job(user.pk, password, job=JOB)
        return f"Password changed successfully for user '{user}'"

    def _typed_password(self, user) -> str:
        """The password typed twice alike and accepted by the password validators, within MAX_TRIES."""
        for _ in range(MAX_TRIES):
            first = self._get_pass()  # type: ignore[attr-defined]  # Django's prompt, not in django-stubs
            second = self._get_pass("Password (again): ")  # type: ignore[attr-defined]
            if first != second:
                self.stdout.write("Passwords do not match. Please try again.")
                continue
            try:
                validate_password(second, user)
            except ValidationError as err:
                self.stderr.write("\n".join(err.messages))
                continue
            return first
        raise CommandError(f"Aborting password change for user '{user}' after {MAX_TRIES} attempts")
