"""`seed_demo`: idempotent demo data, and sign-in details a person or a script can use."""

import io
import json

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.test import Client, override_settings
from django.urls import reverse
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from accessgov import personas
from accessgov.models import Role, System, User


def _seed(*args: str) -> str:
    out = io.StringIO()
    with override_settings(DEBUG=True):
        call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_seed_demo_is_idempotent_and_keeps_secrets():
    first = json.loads(_seed("--json"))
    counts = (User.objects.count(), System.objects.count(), Role.objects.count(), TOTPDevice.objects.count())
    second = json.loads(_seed("--json"))
    assert (
        User.objects.count(),
        System.objects.count(),
        Role.objects.count(),
        TOTPDevice.objects.count(),
    ) == counts
    assert first == second
    assert {u["username"] for u in first["users"]} == {"alice", "bob", "carol", "olivia", "audrey", "adam"}
    assert set(Group.objects.values_list("name", flat=True)) >= set(personas.ALL)
    assert System.objects.count() >= 3
    assert Role.objects.count() >= 6


@pytest.mark.django_db
def test_printed_sign_in_details_work(client):
    details = json.loads(_seed("--json"))["users"][0]
    import base64

    key = base64.b32decode(details["totp_secret"])
    code = TOTP(key).token()
    response = client.post(
        reverse("accounts:login"), {"username": details["username"], "password": details["password"]}
    )
    assert response["Location"] == reverse("accounts:otp")
    response = client.post(reverse("accounts:otp"), {"otp_token": f"{code:06d}"})
    assert response["Location"] == reverse("home")
    assert Client().get(reverse("home")).status_code == 302
    assert details["otpauth_uri"].startswith("otpauth://totp/AccessGov")


@pytest.mark.django_db
def test_human_output_names_every_user_and_how_to_compute_a_code():
    text = _seed()
    for name in ("alice", "bob", "carol", "olivia", "audrey", "adam"):
        assert name in text
    assert "oathtool --totp -b SECRET" in text


@pytest.mark.django_db
def test_seed_demo_refuses_to_run_in_production_mode():
    with pytest.raises(CommandError, match="runs only with DEBUG=1"):
        call_command("seed_demo", stdout=io.StringIO())
