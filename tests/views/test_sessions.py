"""Session lifetime: idle and absolute timeouts, sign-out, and credential changes ending other sessions."""

import time
from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from accessgov.models import AccessEvent
from tests.conftest import PASSWORD, sign_in, totp_code

HOME = reverse("home")
T0 = 1_800_000_015.0


@pytest.mark.django_db
def test_idle_session_ends_after_30_minutes(client, requester):
    with time_machine.travel(T0, tick=False):
        sign_in(client, requester)
    with time_machine.travel(T0 + 29 * 60, tick=False):
        assert client.get(HOME).status_code == 200
    # Activity at 29 min restarts the idle clock.
    with time_machine.travel(T0 + 58 * 60, tick=False):
        assert client.get(HOME).status_code == 200
    with time_machine.travel(T0 + 89 * 60, tick=False):
        response = client.get(HOME)
        assert response["Location"].startswith(reverse("accounts:login"))
        page = client.get(response["Location"]).content.decode()
        assert "Your session has ended" in page


@pytest.mark.django_db
def test_stay_signed_in_restarts_the_idle_clock_and_nothing_else(requester):
    """The idle warning's button (accessgov.js): a POST with the CSRF token; it restarts the idle clock but
    not the absolute one, and a forged cross-site POST is refused."""
    signed_in, client = Client(), Client(enforce_csrf_checks=True)
    keep_alive = reverse("accounts:keep_alive")
    with time_machine.travel(T0, tick=False):
        sign_in(signed_in, requester)
        client.cookies = signed_in.cookies
        token = str(client.get(HOME).context["csrf_token"])
    with time_machine.travel(T0 + 29 * 60, tick=False):
        assert client.post(keep_alive).status_code == 403  # no token: refused (as any request, it is activity)
        assert client.get(keep_alive).status_code == 405
    with time_machine.travel(T0 + 29 * 60 + 50, tick=False):
        assert client.post(keep_alive, HTTP_X_CSRFTOKEN=token).status_code == 204
    with time_machine.travel(T0 + 58 * 60, tick=False):
        assert client.post(keep_alive, HTTP_X_CSRFTOKEN=token).status_code == 204
    with time_machine.travel(T0 + 12 * 3600 + 1, tick=False):  # the absolute timeout still ends it
        response = client.post(keep_alive, HTTP_X_CSRFTOKEN=token)
        assert response.status_code == 302 and response["Location"].startswith(reverse("accounts:login"))


@pytest.mark.django_db
def test_a_page_refreshing_itself_is_not_activity(client, requester):
    """The live page polls every 10 s: it would keep an abandoned session alive forever. Its polls carry
    X-AccessGov-Poll and do not restart the idle clock; the person's own requests do."""
    live = reverse("live_access")
    with time_machine.travel(T0, tick=False):
        sign_in(client, requester)
    with time_machine.travel(T0 + 29 * 60, tick=False):
        assert client.get(live, HTTP_X_ACCESSGOV_POLL="1").status_code in (200, 403)
    with time_machine.travel(T0 + 31 * 60, tick=False):
        assert client.get(HOME)["Location"].startswith(reverse("accounts:login"))


@pytest.mark.django_db
def test_the_idle_timeout_counts_from_the_last_request_not_from_the_last_minute(client, requester):
    with time_machine.travel(T0, tick=False):
        sign_in(client, requester)
    with time_machine.travel(T0 + 40, tick=False):
        assert client.get(HOME).status_code == 200
    # 29 min 50 s after the last request (30 min 30 s after sign-in): still signed in.
    with time_machine.travel(T0 + 40 + 29 * 60 + 50, tick=False):
        assert client.get(HOME).status_code == 200


@pytest.mark.django_db
def test_a_one_minute_idle_timeout_holds_for_a_person_active_every_50_seconds(client, requester, settings):
    settings.SESSION_IDLE_TIMEOUT = timedelta(minutes=1)
    with time_machine.travel(T0, tick=False):
        sign_in(client, requester)
    for step in range(1, 7):
        with time_machine.travel(T0 + 50 * step, tick=False):
            assert client.get(HOME).status_code == 200, step
    with time_machine.travel(T0 + 50 * 6 + 61, tick=False):
        assert client.get(HOME)["Location"].startswith(reverse("accounts:login"))


@pytest.mark.django_db
def test_session_ends_after_12_hours_even_when_active(client, requester):
    with time_machine.travel(T0, tick=False):
        sign_in(client, requester)
    for minutes in range(20, 12 * 60, 20):
        with time_machine.travel(T0 + minutes * 60, tick=False):
            assert client.get(HOME).status_code == 200, minutes
    with time_machine.travel(T0 + 12 * 3600 + 60, tick=False):
        assert client.get(HOME)["Location"].startswith(reverse("accounts:login"))


@pytest.mark.django_db
def test_logout_needs_post_and_ends_the_session(verified_client):
    response = verified_client.get(reverse("accounts:logout"))
    assert response.status_code == 200
    assert verified_client.get(HOME).status_code == 200
    response = verified_client.post(reverse("accounts:logout"))
    assert response["Location"] == reverse("accounts:login")
    assert verified_client.get(HOME)["Location"].startswith(reverse("accounts:login"))


@pytest.mark.django_db
def test_password_change_ends_other_sessions_but_keeps_this_one(requester):
    device = TOTPDevice.objects.get(user=requester)
    with time_machine.travel(T0, tick=False):
        laptop = sign_in(Client(), requester)
    with time_machine.travel(T0 + 30, tick=False):
        phone = Client()
        phone.post(reverse("accounts:login"), {"username": requester.username, "password": PASSWORD})
        phone.post(reverse("accounts:otp"), {"otp_token": totp_code(device, at=T0 + 30)})
        assert phone.get(HOME).status_code == 200
        response = laptop.post(
            reverse("accounts:password_change"),
            {
                "old_password": PASSWORD,
                "new_password1": "a-new-long-passphrase-42",
                "new_password2": "a-new-long-passphrase-42",
            },
        )
        assert response["Location"] == reverse("accounts:security")
        assert laptop.get(HOME).status_code == 200
        assert phone.get(HOME)["Location"].startswith(reverse("accounts:login"))
    # The change is evidence: one user.password_set event by the person (the refused attempt below writes none).
    event = AccessEvent.objects.get(event_type=AccessEvent.Type.USER_PASSWORD_SET)
    assert event.actor_id == requester.pk and event.reason == "Changed by the person"


@pytest.mark.django_db
def test_weak_new_password_is_refused_with_reasons(verified_client):
    response = verified_client.post(
        reverse("accounts:password_change"),
        {"old_password": PASSWORD, "new_password1": "short", "new_password2": "short"},
    )
    assert response.status_code == 200
    assert "too short" in response.content.decode()
    assert not AccessEvent.objects.filter(event_type=AccessEvent.Type.USER_PASSWORD_SET).exists()


@pytest.mark.django_db
def test_replacing_the_authenticator_ends_other_sessions_and_requires_enrolment(requester):
    device = TOTPDevice.objects.get(user=requester)
    with time_machine.travel(T0, tick=False):
        laptop = sign_in(Client(), requester)
    with time_machine.travel(T0 + 30, tick=False):
        phone = Client()
        phone.post(reverse("accounts:login"), {"username": requester.username, "password": PASSWORD})
        phone.post(reverse("accounts:otp"), {"otp_token": totp_code(device, at=T0 + 30)})
        assert phone.get(HOME).status_code == 200
    with time_machine.travel(T0 + 60, tick=False):
        response = laptop.post(reverse("accounts:authenticator_reset"), {"otp_token": totp_code(device, at=T0 + 60)})
        assert response["Location"] == reverse("accounts:enrol")
        assert not TOTPDevice.objects.filter(user=requester, confirmed=True).exists()
        # This session must enrol a new device before anything else; the other one is signed out.
        assert laptop.get(HOME)["Location"].startswith(reverse("accounts:enrol"))
        assert phone.get(HOME)["Location"].startswith(reverse("accounts:login"))


@pytest.mark.django_db
def test_replacing_the_authenticator_needs_a_valid_current_code(verified_client, requester):
    response = verified_client.post(reverse("accounts:authenticator_reset"), {"otp_token": "000000"})
    assert response.status_code == 400
    assert TOTPDevice.objects.filter(user=requester, confirmed=True).exists()


@pytest.mark.django_db
def test_regenerating_backup_codes_needs_a_current_code_and_replaces_the_old_ones(verified_client, requester):
    old = requester.backup_codes
    # A session alone (stolen, say) does not mint a second factor: no code, a wrong one, or a backup code.
    for refused in ({}, {"otp_token": "000000"}, {"otp_token": old[0]}):
        response = verified_client.post(reverse("accounts:backup_codes"), refused)
        assert response.status_code == 400, refused
    from django_otp.plugins.otp_static.models import StaticToken

    assert set(StaticToken.objects.filter(device__user=requester).values_list("token", flat=True)) >= set(old[1:])
    device = TOTPDevice.objects.get(user=requester, confirmed=True)
    with time_machine.travel(time.time() + 60, tick=False):  # past the throttle the two failures set
        response = verified_client.post(reverse("accounts:backup_codes"), {"otp_token": totp_code(device)})
    assert response["Location"] == reverse("accounts:backup_codes")
    page = verified_client.get(reverse("accounts:backup_codes")).content.decode()
    assert not any(code in page for code in old)
    new = set(StaticToken.objects.filter(device__user=requester).values_list("token", flat=True))
    assert len(new) == 10
    assert new.isdisjoint(old)
    assert all(code in page for code in new)


# --- Nothing typed is lost when the session ends under a form (accessgov.drafts) ---------------------------


def _timed_out_post(client, url: str, data: dict, came_from: str):
    return client.post(url, data, HTTP_REFERER=f"http://testserver{came_from}")


@pytest.mark.django_db
def test_a_request_sent_after_the_session_ended_is_not_sent_and_its_text_is_filled_in_after_sign_in(world):
    from accessgov.models import AccessRequest

    client = Client()
    new = reverse("request_new")
    with time_machine.travel(T0, tick=False):
        sign_in(client, world.requester)
        assert client.get(new).status_code == 200
    typed = {
        "role": str(world.role.pk),
        "duration": "2h",
        "justification": "Rotating the payments DB credentials after INC-77",
        "ticket": "",
    }
    with time_machine.travel(T0 + 31 * 60, tick=False):
        response = _timed_out_post(client, new, typed, came_from=new)
        assert response.status_code == 302 and response["Location"] == f"{reverse('accounts:login')}?next={new}"
        assert not AccessRequest.objects.exists()  # nothing was sent
        # A HEAD (a link checker, a prefetching proxy) leaves the message and the draft for the GET.
        assert client.head(response["Location"]).status_code == 200
        assert "What you typed is kept" in client.get(response["Location"]).content.decode()
        sign_in(client, world.requester)
        assert client.head(new).status_code == 200
        page = client.get(new).content.decode()
        assert "Rotating the payments DB credentials after INC-77" in page and 'value="2h"' in page
        assert "Rotating the payments DB" not in client.get(new).content.decode()  # filled in once
    assert not AccessRequest.objects.exists()


@pytest.mark.django_db
def test_a_decision_typed_before_the_session_ended_is_back_in_its_card_and_nothing_was_decided(world):
    from accessgov.models import AccessRequest
    from tests.support.requests import submit

    client = Client()
    with time_machine.travel(T0, tick=False):
        access_request = submit(world)
        sign_in(client, world.approver)
        assert client.get(reverse("approvals")).status_code == 200
    with time_machine.travel(T0 + 31 * 60, tick=False):
        deny = reverse("request_deny", args=[access_request.pk])
        typed = {"comment": "Use the read replica instead", "back": "/approvals/", "otp_token": "123456"}
        queue = f"/approvals/?risk={world.role.risk_tier}"
        response = _timed_out_post(client, deny, typed, came_from=queue)
        assert response["Location"] == f"{reverse('accounts:login')}?next=/approvals/%3Frisk%3D{world.role.risk_tier}"
        assert "123456" not in str(dict(client.session))  # a code is never kept
        sign_in(client, world.approver)
        page = client.get(queue).content.decode()
        assert "Use the read replica instead</textarea>" in page
    assert AccessRequest.objects.get(pk=access_request.pk).status == AccessRequest.Status.PENDING


@pytest.mark.django_db
def test_a_kept_draft_is_never_shown_to_someone_else_signing_in_on_the_same_browser(world):
    """A shared machine: the requester's session times out under a typed request; the approver signs in next."""
    from datetime import UTC, datetime

    from accessgov.models import Eligibility

    Eligibility.objects.create(role=world.role, user=world.approver, starts_at=datetime(2020, 1, 1, tzinfo=UTC))
    client = Client()
    new = reverse("request_new")
    with time_machine.travel(T0, tick=False):
        sign_in(client, world.requester)
        client.get(new)
    with time_machine.travel(T0 + 31 * 60, tick=False):
        typed = {"role": str(world.role.pk), "duration": "1h", "justification": "Private: the payroll incident INC-9"}
        assert _timed_out_post(client, new, typed, came_from=new).status_code == 302
        assert "accessgov_form_draft" in client.session
        sign_in(client, world.approver)
        form = client.get(new).content.decode()
        assert 'name="justification"' in form and "payroll incident" not in form
        assert "payroll incident" not in client.get(reverse("home")).content.decode()
    # And a POST from a browser that was never signed in keeps nothing at all.
    stranger = Client()
    stranger.get(reverse("accounts:login"))
    _timed_out_post(stranger, new, typed, came_from=new)
    assert "accessgov_form_draft" not in stranger.session


@pytest.mark.django_db
def test_a_form_without_a_valid_csrf_token_plants_nothing_in_the_next_sign_in(world):
    """Another site cannot post text into someone's forms by sending them signed out."""
    from tests.conftest import verify_session

    client = Client(enforce_csrf_checks=True)
    new = reverse("request_new")
    with time_machine.travel(T0, tick=False):
        verify_session(client, world.requester)
        assert client.get(new).status_code == 200
    with time_machine.travel(T0 + 31 * 60, tick=False):
        forged = {"role": str(world.role.pk), "duration": "8h", "justification": "Planted by another site"}
        response = _timed_out_post(client, new, forged, came_from=new)
        assert response.status_code == 302 and "accessgov_form_draft" not in client.session
        verify_session(client, world.requester)
        assert "Planted by another site" not in client.get(new).content.decode()


@pytest.mark.django_db
def test_a_form_without_its_csrf_token_gets_the_products_403_page_and_nothing_is_done(world):
    """A probe's finding: Django's stock page answered (its inline style blocked by our CSP)."""
    from accessgov.models import AccessRequest
    from tests.conftest import verify_session

    client = verify_session(Client(enforce_csrf_checks=True), world.requester)
    response = client.post(reverse("request_new"), {"role": world.role.pk, "duration": "1h", "justification": "x" * 20})
    page = response.content.decode()
    assert response.status_code == 403 and "without a valid security token" in page and "<style" not in page
    assert not AccessRequest.objects.exists()
