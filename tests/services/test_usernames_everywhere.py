"""One rule for the name an account takes, on every path (``services.usernames``): SCIM refused a Cyrillic
"alice" beside a Latin one (and the other way round), but the admin's add form and rename, a service
account and ``manage.py createsuperuser`` made one without a word. Each now refuses it with a clear message (a
form error on the field, a refusal when proposed and again when applied, a CommandError or a question asked again),
and so does another account's name in another letter case. On PostgreSQL every path takes the SCIM path's lock,
so two look-alikes made at once through different paths are decided one after the other."""

import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse

from accessgov.exceptions import PolicyViolation
from accessgov.identity.scim import UserValues
from accessgov.models import AccessEvent, ChangeRequest, ExternalIdentity, IdentityProvider, User
from accessgov.services import changes
from accessgov.services import identity as identity_services
from accessgov.services import users as user_services
from tests.conftest import verify_session
from tests.support.admin_forms import post_admin_form
from tests.support.identity_support import make_scim_client

pytestmark = pytest.mark.django_db

CYRILLIC_ALICE = "\u0430\u04cf\u0456\u0441\u0435"  # a, palochka, i, es, ie: reads "alice"
GREEK_BOB = "\u0392\u039f\u0392"  # capital beta, omicron, beta: reads "BOB"
PASSWORD = "a long enough pass 42"


def as_(user) -> Client:
    return verify_session(Client(), user)


def _created_events(username: str) -> int:
    return AccessEvent.objects.filter(event_type=AccessEvent.Type.USER_CREATED, data__username=username).count()


# --- The admin's add form -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("existing", "typed", "why"),
    [
        ("alice", CYRILLIC_ALICE, "its Cyrillic letters read as alice, another person's name"),
        (CYRILLIC_ALICE, "alice", f"it reads as {CYRILLIC_ALICE}, another person's name written in Cyrillic letters"),
        ("bob", GREEK_BOB, "its Greek letters read as bob, another person's name"),
        ("alice", "\u0430lice", "it mixes Cyrillic and Latin letters, which look alike"),
    ],
)
def test_the_admin_add_form_refuses_a_look_alike_on_the_username_field(existing, typed, why, admins, make_user):
    make_user(existing, device=False)
    response = as_(admins[0]).post(
        reverse("admin:accessgov_user_add"), {"username": typed, "password1": PASSWORD, "password2": PASSWORD}
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["username"] == [f"This username is refused: {why}."]
    assert not User.objects.filter(username=typed).exists() and _created_events(typed) == 0


def test_the_admin_add_form_still_makes_a_name_nobody_reads_alike(admins, make_user):
    make_user("alice", device=False)
    for name in ("alicia", "\u0438\u0432\u0430\u043d"):  # Latin close to alice; Russian "ivan" reads as no one
        response = as_(admins[0]).post(
            reverse("admin:accessgov_user_add"), {"username": name, "password1": PASSWORD, "password2": PASSWORD}
        )
        assert response.status_code == 302, name
        assert User.objects.get(username=name).created_by == admins[0]


def test_the_account_service_refuses_a_look_alike_whoever_calls_it(admins, make_user):
    make_user("alice", device=False)
    with pytest.raises(PolicyViolation, match=f"The username {CYRILLIC_ALICE} is refused: its Cyrillic letters"):
        user_services.user_create(admins[0], User(username=CYRILLIC_ALICE))
    assert not User.objects.filter(username=CYRILLIC_ALICE).exists() and _created_events(CYRILLIC_ALICE) == 0


# --- A rename in the admin (four-eyed) ------------------------------------------------------------------------


def test_a_rename_to_a_look_alike_is_refused_on_the_form_and_by_the_service(world, admins):
    first, _ = admins
    url = reverse("admin:accessgov_user_change", args=[world.outsider.pk])
    cyrillic_approver = "\u0430\u0440\u0440r\u043ev\u0435r"  # mixes: refused as mixing
    assert world.approver.username == "approver"
    response = post_admin_form(
        as_(first), url, "user_form", username="\u0430\u0440\u0440\u0433\u043e\u0475\u0435\u0433"
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["username"] == [
        "This username is refused: its Cyrillic letters read as approver, another person's name."
    ]
    assert not ChangeRequest.objects.filter(kind="user_identity").exists()
    with pytest.raises(PolicyViolation, match="mixes Cyrillic and Latin"):
        changes.change_propose_user_identity(first, user=world.outsider, username=cyrillic_approver)
    # Another account's name in another letter case passes for it too (Django's unique username is case-sensitive).
    with pytest.raises(PolicyViolation, match="it is taken, written approver"):
        changes.change_propose_user_identity(first, user=world.outsider, username="Approver")
    assert not ChangeRequest.objects.filter(kind="user_identity").exists()


def test_a_rename_in_letter_case_only_or_to_what_its_own_provider_calls_it_is_allowed(world, admins):
    first, second = admins
    provider = IdentityProvider.objects.create(
        slug="okta", name="Okta", issuer="https://okta.example.com", client_id="c"
    )
    ExternalIdentity.objects.create(provider=provider, user=world.outsider, subject="s1", user_name=CYRILLIC_ALICE)
    for name in ("Outsider", "alice"):  # the account's own names do not count against it
        change = changes.change_propose_user_identity(first, user=world.outsider, username=name)
        changes.change_approve(second, change.pk)
        world.outsider.refresh_from_db()
        assert world.outsider.username == name


def test_a_rename_proposed_while_free_is_refused_when_a_look_alike_appeared_before_approval(world, admins, make_user):
    first, second = admins
    change = changes.change_propose_user_identity(first, user=world.outsider, username="alice")
    make_user(CYRILLIC_ALICE, device=False)
    with pytest.raises(PolicyViolation, match="another person's name written in Cyrillic letters"):
        changes.change_approve(second, change.pk)
    world.outsider.refresh_from_db()
    assert world.outsider.username == "outsider"


# --- Service accounts (four-eyed) -----------------------------------------------------------------------------


def test_a_service_account_named_like_another_is_refused_on_the_form_and_when_applied(admins, make_user):
    first, second = admins
    make_user("deploy-bot", device=False)
    response = as_(first).post(
        reverse("admin:accessgov_serviceaccount_add"), {"username": "d\u0435ploy-bot", "description": "CI"}
    )
    assert response.status_code == 200
    assert response.context["form"].errors["username"] == [
        "This username is refused: it mixes Cyrillic and Latin letters, which look alike."
    ]
    response = as_(first).post(reverse("admin:accessgov_serviceaccount_add"), {"username": "DEPLOY-BOT"})
    assert response.context["form"].errors["username"] == ["This username is refused: it is taken, written deploy-bot."]
    make_user("bob", device=False)
    with pytest.raises(PolicyViolation, match="Greek letters read as bob"):
        changes.change_propose_service_account(first, username=GREEK_BOB)
    assert not ChangeRequest.objects.filter(kind="service_account").exists()

    # Proposed while free; a look-alike person appears before the second admin approves: refused, nothing made.
    change = changes.change_propose_service_account(first, username="alice")
    make_user(CYRILLIC_ALICE, device=False)
    with pytest.raises(PolicyViolation, match="written in Cyrillic letters"):
        changes.change_approve(second, change.pk)
    assert not User.objects.filter(username="alice").exists()


def test_a_service_account_with_a_fresh_name_is_still_proposed_and_made(admins):
    first, second = admins
    response = as_(first).post(reverse("admin:accessgov_serviceaccount_add"), {"username": "deploy-bot"})
    assert response.status_code == 302
    changes.change_approve(second, ChangeRequest.objects.get(kind="service_account").pk)
    assert User.objects.get(username="deploy-bot").is_service_account


# --- manage.py createsuperuser --------------------------------------------------------------------------------


def test_createsuperuser_refuses_a_look_alike_without_input(monkeypatch, make_user):
    make_user("alice", device=False)
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)
    for name, why in (
        (CYRILLIC_ALICE, "its Cyrillic letters read as alice"),
        ("ALICE", "it is taken, written alice"),
    ):
        with pytest.raises(CommandError, match=f"That username is refused: {why}"):
            call_command("createsuperuser", "--noinput", "--username", name, "--email", "r@example.com", verbosity=0)
        assert not User.objects.filter(username=name).exists() and _created_events(name) == 0


class _Terminal:
    def isatty(self) -> bool:
        return True


def test_createsuperuser_asks_again_at_once_for_a_look_alike_typed_at_the_terminal(monkeypatch, make_user, capsys):
    make_user("alice", device=False)
    answers = iter([CYRILLIC_ALICE, "root-admin", "root@example.com"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    monkeypatch.setattr("getpass.getpass", lambda prompt="Password: ": PASSWORD)
    call_command("createsuperuser", interactive=True, stdin=_Terminal())
    output = capsys.readouterr()
    assert "That username is refused: its Cyrillic letters read as alice, another person's name." in output.err
    assert "Superuser created successfully." in output.out
    assert User.objects.get(username="root-admin").is_superuser and _created_events("root-admin") == 1
    assert not User.objects.filter(username=CYRILLIC_ALICE).exists()


def test_createsuperuser_checks_again_once_the_account_is_made_and_then_makes_nothing(monkeypatch, make_user):
    """The early look passed (the look-alike appeared after it, as a concurrent create would): the check after the
    account is made, under the lock and in the same transaction, refuses it and nothing stays, not even a line
    saying it was made."""
    from accessgov.services import usernames

    early_looks = []
    real = usernames.username_problem

    def appearing_meanwhile(name, *, user_id=None, lock=True):
        if not lock:
            early_looks.append(name)
            make_user("alice", device=False)
            return None
        return real(name, user_id=user_id, lock=lock)

    monkeypatch.setattr(usernames, "username_problem", appearing_meanwhile)
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)
    with pytest.raises(CommandError, match="its Cyrillic letters read as alice"):
        call_command("createsuperuser", "--noinput", "--username", CYRILLIC_ALICE, "--email", "r@example.com")
    assert early_looks == [CYRILLIC_ALICE]
    assert not User.objects.filter(username__in=[CYRILLIC_ALICE, "alice"]).exists()


# --- Made at once through different paths (PostgreSQL) ---------------------------------------------------------


def _make_in_admin(name: str) -> None:
    admin = User.objects.get(username="admin1")
    user_services.user_create(admin, User(username=name))


def _make_by_scim(name: str) -> None:
    provider = IdentityProvider.objects.get(slug="okta")
    identity_services.scim_user_create(
        provider.scim_service_account, provider, UserValues(user_name=name, external_id=name)
    )


def _make_service_account(name: str) -> None:
    first, second = User.objects.get(username="admin1"), User.objects.get(username="admin2")
    changes.change_approve(second, changes.change_propose_service_account(first, username=name).pk)


def _make_superuser(name: str) -> None:
    call_command("createsuperuser", "--noinput", "--username", name, "--email", "r@example.com", verbosity=0)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("first_path", "second_path", "first", "second"),
    [
        (_make_by_scim, _make_in_admin, "alice", CYRILLIC_ALICE),
        (_make_in_admin, _make_service_account, CYRILLIC_ALICE, "alice"),
        (_make_service_account, _make_superuser, "alice", CYRILLIC_ALICE),
        (_make_superuser, _make_by_scim, "alice", CYRILLIC_ALICE),
    ],
    ids=["scim-then-admin", "admin-then-service-account", "service-account-then-createsuperuser", "shell-then-scim"],
)
def test_two_look_alikes_made_at_once_through_different_paths_are_decided_one_after_the_other(
    first_path, second_path, first, second, admins, monkeypatch
):
    """The first has checked and written its name but not committed when the second checks: without the one lock
    the second cannot see the first and both commit; with it, the second waits for the first's commit, then sees it."""
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)
    provider = IdentityProvider.objects.create(
        slug="okta", name="Okta", issuer="https://okta.example.com", client_id="c"
    )
    make_scim_client(provider)
    written, second_done = threading.Event(), threading.Event()
    outcomes: dict[str, object] = {}

    def make_first() -> None:
        try:
            with transaction.atomic():
                first_path(first)
                written.set()
                second_done.wait(timeout=3)  # hold the commit while the second runs (or waits)
            outcomes["first"] = "made"
        except BaseException as error:
            outcomes["first"] = error
            written.set()
        finally:
            connection.close()

    def make_second() -> None:
        try:
            written.wait(timeout=10)
            second_path(second)
            outcomes["second"] = "made"
        except BaseException as error:
            outcomes["second"] = error
        finally:
            second_done.set()
            connection.close()

    threads = [threading.Thread(target=make_first), threading.Thread(target=make_second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    assert outcomes["first"] == "made", outcomes
    assert isinstance(outcomes["second"], PolicyViolation | CommandError), outcomes
    assert "another person's name" in str(outcomes["second"])
    assert list(User.objects.filter(username__in=[first, second]).values_list("username", flat=True)) == [first]
