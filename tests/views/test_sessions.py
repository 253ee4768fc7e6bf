"""Session lifetime: idle and absolute timeouts, sign-out, and credential changes ending other sessions."""

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

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


@pytest.mark.django_db
def test_weak_new_password_is_refused_with_reasons(verified_client):
    response = verified_client.post(
        reverse("accounts:password_change"),
        {"old_password": PASSWORD, "new_password1": "short", "new_password2": "short"},
    )
    assert response.status_code == 200
    assert "too short" in response.content.decode()


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
def test_regenerating_backup_codes_replaces_the_old_ones(verified_client, requester):
    old = requester.backup_codes
    response = verified_client.post(reverse("accounts:backup_codes"))
    assert response["Location"] == reverse("accounts:backup_codes")
    page = verified_client.get(reverse("accounts:backup_codes")).content.decode()
    assert not any(code in page for code in old)
    from django_otp.plugins.otp_static.models import StaticToken

    new = set(StaticToken.objects.filter(device__user=requester).values_list("token", flat=True))
    assert len(new) == 10
    assert new.isdisjoint(old)
    assert all(code in page for code in new)
