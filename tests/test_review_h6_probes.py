"""Reviewer probes (helper 6): headers on whitenoise's answers other than 200, the admin add form's username
errors, and the access history's new cells with hostile values."""

import pytest
from django.test import Client
from django.urls import reverse

from tests.conftest import verify_session

pytestmark = pytest.mark.django_db


@pytest.fixture
def static_from_finders(settings):
    settings.WHITENOISE_USE_FINDERS = True
    settings.WHITENOISE_AUTOREFRESH = True


@pytest.mark.usefixtures("static_from_finders")
def test_a_static_files_not_modified_answer_keeps_the_static_policy_not_the_pages():
    """A 304 updates the headers a browser stored for the file (RFC 9111 4.3.4): it must not swap the file's
    sandboxing policy for the pages' (which allows script from the site and has no sandbox)."""
    client = Client()
    first = client.get("/static/css/accessgov.css", secure=True)
    assert first.status_code == 200 and "sandbox" in first["Content-Security-Policy"]
    again = client.get("/static/css/accessgov.css", secure=True, headers={"If-None-Match": first["ETag"]})
    assert again.status_code == 304
    assert "sandbox" in again.get("Content-Security-Policy", "sandbox")


@pytest.mark.usefixtures("static_from_finders")
def test_a_post_to_a_static_file_is_405_with_the_headers():
    response = Client().post("/static/css/accessgov.css", secure=True)
    assert response.status_code == 405
    assert response["X-Frame-Options"] == "DENY" and response["X-Content-Type-Options"] == "nosniff"
    assert "Strict-Transport-Security" in response


def test_the_add_form_says_once_that_a_name_is_taken_in_another_case(make_user):
    make_user("alice")
    admin = make_user("root1", is_staff=True, is_superuser=True)
    client = verify_session(Client(), admin)
    response = client.post(
        reverse("admin:accessgov_user_add"),
        {
            "username": "Alice",
            "password1": "a long enough pass 42",
            "password2": "a long enough pass 42",
            "usable_password": "true",
        },
        secure=True,
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["username"]
    assert len(errors) == 1, errors


# --- The username lock and the account's row, taken in opposite orders (PostgreSQL) -------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_approved_rename_and_a_provider_rename_of_the_same_person_at_once_do_not_deadlock(admins, monkeypatch):
    """A person changes name at the provider (SCIM: userName and family name) while a second admin approves a
    rename of them in AccessGov. The approval locks the account's row, then takes the username lock
    (``_apply_user_identity``); SCIM takes the username lock (``_ensure_name_free``), then writes the account's
    row. Both must finish, one after the other — not one of them answered with PostgreSQL's "deadlock detected"."""
    import threading
    import time

    from django.db import connection

    from accessgov.identity.scim import UserValues
    from accessgov.models import IdentityProvider
    from accessgov.services import changes, usernames
    from accessgov.services import identity as identity_services
    from tests.support.identity_support import make_scim_client

    first, second = admins
    provider = IdentityProvider.objects.create(
        slug="okta", name="Okta", issuer="https://okta.example.com", client_id="c"
    )
    make_scim_client(provider)
    scim = provider.scim_service_account
    identity = identity_services.scim_user_create(
        scim, provider, UserValues(user_name="carol", external_id="carol", family_name="Smith")
    )
    change = changes.change_propose_user_identity(first, user=identity.user, username="carol.jones")

    row_locked = threading.Event()
    real = usernames.ensure_username_allowed

    def after_the_row_lock(name, *, user_id=None):
        row_locked.set()  # _apply_user_identity holds the account's row here
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # until SCIM holds the username lock and waits for the row
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")
                if cursor.fetchone()[0] or "scim" in outcomes:
                    break
            time.sleep(0.05)
        time.sleep(0.3)
        return real(name, user_id=user_id)

    monkeypatch.setattr(changes.usernames, "ensure_username_allowed", after_the_row_lock)
    outcomes: dict[str, object] = {}

    def approve() -> None:
        try:
            changes.change_approve(second, change.pk)
            outcomes["approve"] = "done"
        except BaseException as error:
            outcomes["approve"] = error
            row_locked.set()
        finally:
            connection.close()

    def provision() -> None:
        try:
            row_locked.wait(timeout=10)
            identity_services.scim_user_update(
                scim,
                provider,
                str(identity.scim_id),
                UserValues(user_name="carol.jones@corp", external_id="carol", family_name="Jones"),
            )
            outcomes["scim"] = "done"
        except BaseException as error:
            outcomes["scim"] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=approve), threading.Thread(target=provision)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert outcomes == {"approve": "done", "scim": "done"}, outcomes
