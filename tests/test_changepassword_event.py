"""``manage.py changepassword`` is ours: the new password and its user.password_set event commit together
(no person acts: the event names the job, as ``createsuperuser``'s user.created does, and says whose
password it is); a refused change writes nothing."""

import pytest
from django.contrib.auth.management.commands import changepassword as django_changepassword
from django.core.management import call_command, get_commands
from django.core.management.base import CommandError

from accessgov.models import AccessEvent, User

pytestmark = pytest.mark.django_db
Type = AccessEvent.Type
NEW = "a brand new long passphrase 42"


def answers(monkeypatch, *typed: str, meanwhile=None) -> None:
    """What the operator types at the password prompts, in order (Django's prompt, which ours inherits);
    ``meanwhile`` runs while they type."""
    queue = list(typed)

    def typed_at_the_prompt(self, prompt="Password: "):
        if meanwhile and len(queue) == 1:
            meanwhile()
        return queue.pop(0)

    monkeypatch.setattr(django_changepassword.Command, "_get_pass", typed_at_the_prompt)


def test_changepassword_is_ours_and_records_whose_password_the_shell_set(make_user, monkeypatch):
    assert get_commands()["changepassword"] == "accessgov"
    person = make_user("carol")
    make_user("bystander")
    answers(monkeypatch, NEW, NEW)
    call_command("changepassword", "carol", verbosity=0)
    person.refresh_from_db()
    assert person.check_password(NEW)
    event = AccessEvent.objects.get(event_type=Type.USER_PASSWORD_SET)
    assert event.actor is None and event.actor_label == "system:manage.py changepassword"
    assert event.data["user_id"] == person.pk and event.data["username"] == "carol"
    assert "manage.py changepassword" in event.reason


def test_a_refused_change_writes_no_event_and_keeps_the_password(make_user, monkeypatch):
    person = make_user("dave")
    old = person.password
    answers(monkeypatch, NEW, "something else", NEW, "not the same", NEW, "nor this")  # three mismatches
    with pytest.raises(CommandError, match="Aborting"):
        call_command("changepassword", "dave", verbosity=0)
    with pytest.raises(CommandError, match="does not exist"):
        call_command("changepassword", "nobody-here", verbosity=0)
    person.refresh_from_db()
    assert person.password == old
    assert not AccessEvent.objects.filter(event_type=Type.USER_PASSWORD_SET).exists()


def test_the_password_and_its_event_commit_together(make_user, monkeypatch):
    person = make_user("erin")
    old = person.password
    answers(monkeypatch, NEW, NEW)

    def broken(*args, **kwargs):
        raise RuntimeError("ledger unavailable")

    monkeypatch.setattr("accessgov.services.users.event_record", broken)
    with pytest.raises(RuntimeError):
        call_command("changepassword", "erin", verbosity=0)
    person.refresh_from_db()
    assert person.password == old  # no password changed without its event


def test_a_deactivation_made_while_the_operator_types_is_not_undone(make_user, monkeypatch):
    """Django's command saves the whole row it read before the prompts; ours saves the password only."""
    person = make_user("frank")
    answers(monkeypatch, NEW, NEW, meanwhile=lambda: User.objects.filter(pk=person.pk).update(is_active=False))
    call_command("changepassword", "frank", verbosity=0)
    person.refresh_from_db()
    assert person.check_password(NEW) and person.is_active is False


def test_with_nothing_to_read_the_command_says_so_and_changes_nothing(make_user, monkeypatch):
    """Run without a terminal and with nothing piped (CI, a cron job): a CommandError, not an EOFError's traceback."""
    person = make_user("gina")
    old = person.password

    def nothing_to_read(self, prompt="Password: "):
        raise EOFError

    monkeypatch.setattr(django_changepassword.Command, "_get_pass", nothing_to_read)
    with pytest.raises(CommandError, match="No password to read"):
        call_command("changepassword", "gina", verbosity=0)
    person.refresh_from_db()
    assert person.password == old
    assert not AccessEvent.objects.filter(event_type=Type.USER_PASSWORD_SET).exists()
