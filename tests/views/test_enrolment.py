"""Enrolling an authenticator: the secret being enrolled belongs to the session that enrols, and a
user who already has an authenticator is never shown a QR code (issue 14, item 7)."""

import io
import re

import pytest
import qrcode
import qrcode.image.svg
import time_machine
from django.test import Client
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from accessgov import otp
from tests.conftest import PASSWORD, sign_in, totp_code

pytestmark = pytest.mark.django_db

ENROL = reverse("accounts:enrol")
ENROL_QR = reverse("accounts:enrol_qr")
OTP = reverse("accounts:otp")
LOGIN = reverse("accounts:login")
# The middle of a 30-second TOTP step, so no test straddles a boundary.
T0 = 1_800_000_015.0


def password_only(user) -> Client:
    client = Client()
    response = client.post(LOGIN, {"username": user.username, "password": PASSWORD})
    assert response.status_code == 302
    return client


def secret_on_page(client: Client) -> str:
    page = client.get(ENROL)
    assert page.status_code == 200, page.status_code
    return re.search(r'id="totp-secret">([A-Z2-7]+)<', page.content.decode()).group(1)


def qr_for(device: TOTPDevice) -> bytes:
    """The SVG the enrolment page's QR code would be for ``device`` (same library, same settings)."""
    image = qrcode.make(device.config_url, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    buffer = io.BytesIO()
    image.save(buffer)
    return buffer.getvalue()


def device_with_secret(user, secret: str) -> TOTPDevice:
    return next(d for d in TOTPDevice.objects.filter(user=user) if otp.base32_secret(d) == secret)


def test_a_password_only_session_of_an_enrolled_user_gets_no_qr_code_and_makes_no_device(requester):
    attacker = password_only(requester)  # knows the password, not the authenticator
    response = attacker.get(ENROL_QR)
    assert response.status_code == 404
    assert b"<svg" not in response.content
    assert attacker.get(ENROL).status_code == 302
    assert attacker.get(reverse("home"))["Location"].startswith(OTP)
    assert list(TOTPDevice.objects.filter(user=requester).values_list("confirmed", flat=True)) == [True]


def test_a_verified_user_with_an_authenticator_gets_no_qr_code_either(requester):
    client = sign_in(Client(), requester)
    assert client.get(ENROL_QR).status_code == 404
    assert TOTPDevice.objects.filter(user=requester).count() == 1


def test_each_enrolling_session_gets_its_own_secret_and_qr_code(newcomer):
    real, attacker = password_only(newcomer), password_only(newcomer)
    real_secret = secret_on_page(real)
    attacker_secret = secret_on_page(attacker)
    assert attacker_secret != real_secret
    real_device = device_with_secret(newcomer, real_secret)
    # The QR code of each session encodes that session's secret, and only that one.
    assert real.get(ENROL_QR).content == qr_for(real_device)
    assert attacker.get(ENROL_QR).content != qr_for(real_device)
    assert attacker.get(ENROL_QR).content == qr_for(device_with_secret(newcomer, attacker_secret))
    # Reloading keeps the session's secret (the person may scan a second time).
    assert secret_on_page(real) == real_secret


def test_the_first_session_to_confirm_wins_and_the_other_pending_secrets_are_dropped(newcomer):
    with time_machine.travel(T0, tick=False):
        real, attacker = password_only(newcomer), password_only(newcomer)
        real_device = device_with_secret(newcomer, secret_on_page(real))
        attacker_device = device_with_secret(newcomer, secret_on_page(attacker))
        response = real.post(ENROL, {"otp_token": totp_code(real_device, at=T0)})
        assert response["Location"] == reverse("accounts:backup_codes")
        # The other session's secret is gone and the session itself ended (a new authenticator ends
        # every other session of the account): its code confirms nothing.
        response = attacker.post(ENROL, {"otp_token": totp_code(attacker_device, at=T0)})
        assert response.status_code == 302 and response["Location"].startswith(LOGIN)
        # Signing in again with the password alone shows no QR code: the account has an authenticator.
        again = password_only(newcomer)
        assert again.get(ENROL_QR).status_code == 404
    assert list(TOTPDevice.objects.filter(user=newcomer).values_list("pk", "confirmed")) == [(real_device.pk, True)]


def test_a_password_only_session_never_sees_the_secret_of_an_authenticator_being_replaced(requester):
    code_device = TOTPDevice.objects.get(user=requester)
    with time_machine.travel(T0, tick=False):
        owner = sign_in(Client(), requester)
    with time_machine.travel(T0 + 30, tick=False):
        response = owner.post(reverse("accounts:authenticator_reset"), {"otp_token": totp_code(code_device)})
        assert response["Location"] == ENROL
        new_secret = secret_on_page(owner)
        attacker = password_only(requester)  # the authenticator is gone: the password alone reaches enrolment
        assert secret_on_page(attacker) != new_secret
        assert attacker.get(ENROL_QR).content != qr_for(device_with_secret(requester, new_secret))
        # The owner finishes with the secret only their session saw.
        new_device = device_with_secret(requester, new_secret)
        response = owner.post(ENROL, {"otp_token": totp_code(new_device, at=T0 + 30)})
        assert response["Location"] == reverse("accounts:backup_codes")
    assert list(TOTPDevice.objects.filter(user=requester).values_list("pk", flat=True)) == [new_device.pk]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_sessions_confirming_at_once_leave_exactly_one_authenticator(newcomer):
    """Each session confirms its own secret at the same moment (PostgreSQL, one thread and connection
    each): the user row lock lets one win; the other is told, and nothing is left half-done."""
    from tests.support.concurrency import race

    with time_machine.travel(T0, tick=False):
        first, second = password_only(newcomer), password_only(newcomer)
        devices = {
            "first": device_with_secret(newcomer, secret_on_page(first)),
            "second": device_with_secret(newcomer, secret_on_page(second)),
        }
        clients = {"first": first, "second": second}
        outcomes = race(
            {
                name: (lambda name=name: clients[name].post(ENROL, {"otp_token": totp_code(devices[name], at=T0)}))
                for name in clients
            }
        )
    assert all(o.ok and o.value.status_code == 302 for o in outcomes.values()), outcomes
    confirmed = list(TOTPDevice.objects.filter(user=newcomer, confirmed=True))
    assert len(confirmed) == 1
    assert TOTPDevice.objects.filter(user=newcomer).count() == 1
    winner = next(name for name, device in devices.items() if device.pk == confirmed[0].pk)
    assert outcomes[winner].value["Location"] == reverse("accounts:backup_codes")
    loser = "second" if winner == "first" else "first"
    assert outcomes[loser].value["Location"] != reverse("accounts:backup_codes")


def test_a_session_overtaken_between_reading_its_secret_and_confirming_it_leaves_no_device_behind(
    newcomer, monkeypatch
):
    """The interleaving the race above hits now and then, made certain: the second session has read its
    pending device when the first finishes enrolling (and deletes it); django-otp's verification then saves
    the device it holds, which writes the deleted row back. The overtaken session is told, and its device goes."""
    with time_machine.travel(T0, tick=False):
        first, second = password_only(newcomer), password_only(newcomer)
        devices = {
            "first": device_with_secret(newcomer, secret_on_page(first)),
            "second": device_with_secret(newcomer, secret_on_page(second)),
        }
        verify = otp.verify_code_pending

        def first_finishes_meanwhile(device, token):
            monkeypatch.setattr(otp, "verify_code_pending", verify)
            done = first.post(ENROL, {"otp_token": totp_code(devices["first"], at=T0)})
            assert done["Location"] == reverse("accounts:backup_codes")
            assert not TOTPDevice.objects.filter(pk=device.pk).exists()
            return verify(device, token)

        monkeypatch.setattr(otp, "verify_code_pending", first_finishes_meanwhile)
        overtaken = second.post(ENROL, {"otp_token": totp_code(devices["second"], at=T0)})
    assert overtaken.status_code == 302 and overtaken["Location"] != reverse("accounts:backup_codes")
    assert list(TOTPDevice.objects.filter(user=newcomer).values_list("pk", "confirmed")) == [
        (devices["first"].pk, True)
    ]
