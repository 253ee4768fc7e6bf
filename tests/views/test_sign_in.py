"""Signing in: password, then a real TOTP code; enrolment; backup codes; replay and throttling."""

import subprocess
import time

import pytest
import time_machine
from django.conf import settings
from django.urls import reverse
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from tests.conftest import PASSWORD, sign_in, totp_code

LOGIN = reverse("accounts:login")
OTP = reverse("accounts:otp")
ENROL = reverse("accounts:enrol")
HOME = reverse("home")

# A fixed instant in the middle of a 30-second TOTP step, so the tests never straddle a boundary.
T0 = 1_800_000_015.0


def session_id(client) -> str:
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def password_step(client, user, **extra):
    return client.post(LOGIN, {"username": user.username, "password": PASSWORD, **extra})


@pytest.mark.django_db
def test_password_then_totp_signs_in(client, requester):
    response = password_step(client, requester)
    assert response.status_code == 302
    assert response["Location"] == OTP
    assert client.get(HOME)["Location"].startswith(OTP)
    device = TOTPDevice.objects.get(user=requester)
    response = client.post(OTP, {"otp_token": totp_code(device)})
    assert response["Location"] == HOME
    assert client.get(HOME).status_code == 200
    # Both cookies are out of scripts' reach (no script reads the CSRF token from its cookie) and same-site.
    for name in (settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME):
        assert client.cookies[name]["httponly"] is True, name
        assert client.cookies[name]["samesite"] == "Lax", name


@pytest.mark.django_db
def test_wrong_password_is_refused_with_a_message(client, requester):
    response = client.post(LOGIN, {"username": requester.username, "password": "wrong"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
    assert client.get(HOME)["Location"].startswith(LOGIN)


@pytest.mark.django_db
def test_session_id_changes_after_password_step_and_after_otp_step(client, requester):
    session = client.session
    session["probe"] = 1
    session.save()
    anonymous_id = session_id(client)
    password_step(client, requester)
    after_password = session_id(client)
    device = TOTPDevice.objects.get(user=requester)
    client.post(OTP, {"otp_token": totp_code(device)})
    after_otp = session_id(client)
    assert len({anonymous_id, after_password, after_otp}) == 3


@pytest.mark.django_db
def test_totp_code_is_accepted_once_and_replay_is_refused(client, requester, make_user):
    device = TOTPDevice.objects.get(user=requester)
    with time_machine.travel(T0, tick=False):
        code = totp_code(device, at=T0)
        sign_in_step = client.post(LOGIN, {"username": requester.username, "password": PASSWORD})
        assert sign_in_step.status_code == 302
        assert client.post(OTP, {"otp_token": code})["Location"] == HOME

        # The same code in a second sign-in (another browser) is refused.
        other = client.__class__()
        password_step(other, requester)
        response = other.post(OTP, {"otp_token": code})
        assert response.status_code == 200
        assert "not valid (or has been used already)" in response.content.decode()

    # The next time step's code works.
    with time_machine.travel(T0 + 30, tick=False):
        device.refresh_from_db()
        device.throttle_reset()
        assert other.post(OTP, {"otp_token": totp_code(device, at=T0 + 30)})["Location"] == HOME


@pytest.mark.django_db
def test_code_used_at_sign_in_is_refused_for_step_up(client, requester):
    device = TOTPDevice.objects.get(user=requester)
    with time_machine.travel(T0, tick=False):
        code = totp_code(device, at=T0)
        password_step(client, requester)
        client.post(OTP, {"otp_token": code})
        response = client.post(reverse("accounts:step_up"), {"otp_token": code})
    assert response.status_code == 200
    assert "has been used already" in response.content.decode()


@pytest.mark.django_db
def test_step_up_accepts_a_fresh_code(client, requester):
    device = TOTPDevice.objects.get(user=requester)
    with time_machine.travel(T0, tick=False):
        password_step(client, requester)
        client.post(OTP, {"otp_token": totp_code(device, at=T0)})
    with time_machine.travel(T0 + 30, tick=False):
        response = client.post(
            reverse("accounts:step_up") + "?next=/accounts/security/",
            {"otp_token": totp_code(device, at=T0 + 30), "next": "/accounts/security/"},
        )
    assert response["Location"] == "/accounts/security/"


@pytest.mark.django_db
def test_wrong_codes_are_throttled_then_the_otp_step_is_locked(client, requester, caplog):
    device = TOTPDevice.objects.get(user=requester)
    password_step(client, requester)
    wrong = f"{(int(totp_code(device)) + 1) % 1_000_000:06d}"
    response = client.post(OTP, {"otp_token": wrong})
    assert "not valid" in response.content.decode()
    # Immediately after a failure the device refuses to check even the right code.
    response = client.post(OTP, {"otp_token": totp_code(device)})
    assert "Too many wrong codes. Wait" in response.content.decode()
    device.refresh_from_db()
    assert device.throttling_failure_count == 1
    for _ in range(settings.OTP_MAX_FAILURES_PER_SESSION - 2):
        client.post(OTP, {"otp_token": wrong})
    # The last allowed failure ends the password-only session: the person must start again.
    assert client.get(HOME)["Location"].startswith(LOGIN)
    assert any("otp step locked" in r.getMessage() for r in caplog.records)
    assert any("otp failure" in r.getMessage() for r in caplog.records)


@pytest.mark.django_db
def test_backup_code_signs_in_once(client, requester):
    code = requester.backup_codes[0]
    password_step(client, requester)
    response = client.post(OTP, {"otp_token": code.upper()})
    assert response["Location"] == HOME
    assert not StaticToken.objects.filter(token=code).exists()
    other = client.__class__()
    password_step(other, requester)
    response = other.post(OTP, {"otp_token": code})
    assert response.status_code == 200
    assert client.get(HOME).status_code == 200


@pytest.mark.django_db
def test_backup_code_does_not_count_as_fresh_for_step_up(client, requester):
    password_step(client, requester)
    client.post(OTP, {"otp_token": requester.backup_codes[1]})
    response = client.post(reverse("accounts:step_up"), {"otp_token": requester.backup_codes[2]})
    assert "Enter the 6 digits" in response.content.decode()


@pytest.mark.django_db
def test_malformed_code_gets_a_clear_message(client, requester):
    password_step(client, requester)
    response = client.post(OTP, {"otp_token": "12ab"})
    assert response.status_code == 200
    assert "Enter the 6 digits from your authenticator app, or an 8-character backup code." in (
        response.content.decode()
    )


@pytest.mark.django_db
def test_new_user_enrols_and_sees_backup_codes_once(client, newcomer):
    response = password_step(client, newcomer)
    assert response["Location"] == ENROL
    page = client.get(ENROL).content.decode()
    device = TOTPDevice.objects.get(user=newcomer, confirmed=False)
    from accessgov.otp import base32_secret

    assert base32_secret(device) in page
    assert client.get(reverse("accounts:enrol_qr"))["Content-Type"] == "image/svg+xml"
    # Until enrolment is confirmed, nothing else is reachable.
    assert client.get(HOME)["Location"].startswith(ENROL)
    response = client.post(ENROL, {"otp_token": totp_code(device)})
    assert response["Location"] == reverse("accounts:backup_codes")
    codes_page = client.get(reverse("accounts:backup_codes")).content.decode()
    tokens = list(StaticToken.objects.filter(device__user=newcomer).values_list("token", flat=True))
    assert len(tokens) == 10
    assert all(token in codes_page for token in tokens)
    # Shown once only.
    again = client.get(reverse("accounts:backup_codes")).content.decode()
    assert not any(token in again for token in tokens)
    assert "10</strong> unused backup codes" in again
    assert client.get(HOME).status_code == 200


@pytest.mark.django_db
def test_enrolment_code_cannot_be_replayed_at_the_next_sign_in(client, newcomer):
    with time_machine.travel(T0, tick=False):
        password_step(client, newcomer)
        client.get(ENROL)
        device = TOTPDevice.objects.get(user=newcomer)
        code = totp_code(device, at=T0)
        client.post(ENROL, {"otp_token": code})
        other = client.__class__()
        password_step(other, newcomer)
        response = other.post(OTP, {"otp_token": code})
    assert "has been used already" in response.content.decode()


@pytest.mark.django_db
def test_wrong_enrolment_code_is_refused(client, newcomer):
    password_step(client, newcomer)
    client.get(ENROL)
    device = TOTPDevice.objects.get(user=newcomer)
    wrong = f"{(int(totp_code(device)) + 5) % 1_000_000:06d}"
    response = client.post(ENROL, {"otp_token": wrong})
    assert response.status_code == 200
    assert "not valid" in response.content.decode()
    device.refresh_from_db()
    assert device.confirmed is False


@pytest.mark.tools
@pytest.mark.django_db
def test_code_from_oathtool_for_the_secret_on_the_enrolment_page_is_accepted(client, newcomer):
    """Cross-check with an independent TOTP implementation, reading the secret the page shows."""
    import re

    password_step(client, newcomer)
    page = client.get(ENROL).content.decode()
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page).group(1)
    # Stay clear of a 30 s boundary between computing and checking the code.
    if time.time() % 30 > 27:
        time.sleep(4)
    code = subprocess.run(
        ["oathtool", "--totp", "-b", secret], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert re.fullmatch(r"\d{6}", code)
    response = client.post(ENROL, {"otp_token": code})
    assert response["Location"] == reverse("accounts:backup_codes")


@pytest.mark.django_db
def test_sign_in_redirect_stays_on_site(client, requester):
    for evil in ("https://evil.example/", "//evil.example/", "/\\evil.example", "https:evil.example"):
        client.logout()
        response = password_step(client, requester, next=evil)
        assert "evil" not in response["Location"]
        device = TOTPDevice.objects.get(user=requester)
        device.last_t = -1
        device.throttle_reset()
        response = client.post(OTP + f"?next={evil}", {"otp_token": totp_code(device), "next": evil})
        assert response["Location"] == HOME, evil


@pytest.mark.django_db
def test_sign_in_continues_to_the_page_asked_for(client, requester):
    response = client.get(reverse("accounts:security"))
    assert response["Location"] == f"{LOGIN}?next=/accounts/security/"
    response = password_step(client, requester, next="/accounts/security/")
    assert response["Location"] == f"{OTP}?next=%2Faccounts%2Fsecurity%2F"
    device = TOTPDevice.objects.get(user=requester)
    response = client.post(response["Location"], {"otp_token": totp_code(device), "next": "/accounts/security/"})
    assert response["Location"] == "/accounts/security/"


@pytest.mark.django_db
def test_repeated_wrong_passwords_lock_out_by_client_address(client, requester):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(LOGIN, {"username": requester.username, "password": "wrong"}, REMOTE_ADDR="203.0.113.7")
    response = client.post(LOGIN, {"username": requester.username, "password": PASSWORD}, REMOTE_ADDR="203.0.113.7")
    assert response.status_code == 429
    assert "Too many failed sign-ins" in response.content.decode()
    # Another address is not locked out by someone else's guessing.
    response = client.post(LOGIN, {"username": requester.username, "password": PASSWORD}, REMOTE_ADDR="198.51.100.9")
    assert response.status_code == 302


@pytest.mark.django_db
def test_verified_user_visiting_sign_in_goes_home(verified_client):
    assert verified_client.get(LOGIN)["Location"] == HOME


@pytest.mark.django_db
def test_admin_needs_otp_and_uses_portal_sign_in(client, make_user):
    admin = make_user("root", is_staff=True, is_superuser=True)
    response = client.get("/admin/")
    assert response["Location"].startswith(LOGIN)
    password_step(client, admin)
    assert client.get("/admin/")["Location"].startswith(OTP)
    assert client.get("/admin/login/")["Location"].startswith(OTP)
    verified = sign_in(client.__class__(), admin)
    assert verified.get("/admin/").status_code == 200
