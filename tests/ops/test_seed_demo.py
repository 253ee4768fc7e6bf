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
    assert {u["username"] for u in first["users"]} == {"alice", "bob", "carol", "olivia", "audrey", "adam", "ada"}
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
    for name in ("alice", "bob", "carol", "olivia", "audrey", "adam", "ada"):
        assert name in text
    assert "oathtool --totp -b SECRET" in text


@pytest.mark.django_db
def test_seed_demo_refuses_to_run_in_production_mode():
    with pytest.raises(CommandError, match="runs only with DEBUG=1"):
        call_command("seed_demo", stdout=io.StringIO())


@pytest.mark.django_db
def test_json_and_printed_url_follow_portal_url():
    with override_settings(PORTAL_URL="http://127.0.0.1:8100"):
        assert json.loads(_seed("--json"))["url"] == "http://127.0.0.1:8100/"
        assert "Sign in at http://127.0.0.1:8100/ " in _seed()


@pytest.mark.django_db
def test_the_demo_has_two_admins_so_four_eyed_changes_can_be_approved():
    _seed()
    assert set(User.objects.filter(is_staff=True, is_superuser=True).values_list("username", flat=True)) >= {
        "adam",
        "ada",
    }


@pytest.mark.django_db
def test_the_demo_shows_the_product_404_page_not_django_debug_list(requester):
    from tests.conftest import verify_session

    client = verify_session(Client(), requester)
    with override_settings(DEBUG=True, DEMO=True):
        response = client.get("/no-such-page/")
        page = response.content.decode()
        assert response.status_code == 404
        assert "There is nothing here" in page and "URLconf" not in page
        response = client.get(reverse("request_detail", args=[999999]))
        assert response.status_code == 404 and "There is nothing here" in response.content.decode()


def test_seed_demo_json_works_in_the_demo_var_dir_without_debug(tmp_path):
    """`make run` marks its var/ as the demo's; the README's `manage.py seed_demo --json` then works
    without DEBUG=1 (and still refuses anywhere else)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DEBUG", "SECRET_KEY")}
    env.update({"VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "portal.settings", "PORTAL_URL": ""})
    env.pop("PORTAL_URL")

    def manage(*args):
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=root, env=env, capture_output=True, text=True, timeout=300
        )

    refused = manage("seed_demo", "--json")
    assert refused.returncode != 0 and "SECRET_KEY must be set" in refused.stderr
    (tmp_path / "demo").touch()
    assert manage("migrate", "--noinput", "-v0").returncode == 0
    seeded = manage("seed_demo", "--json")
    assert seeded.returncode == 0, seeded.stderr
    assert json.loads(seeded.stdout)["url"] == "http://127.0.0.1:8000/"


@pytest.mark.django_db
def test_the_demo_ledgers_times_run_forward():
    """Each event happens no earlier than the one before it (the auditor probe found the demo's activity finding
    dated before the events it followed, its evidence after it)."""
    from accessgov.models import AccessEvent

    call_command("seed_demo", "--force", stdout=io.StringIO())
    times = list(AccessEvent.objects.order_by("sequence").values_list("occurred_at", flat=True))
    assert len(times) > 10
    assert times == sorted(times)
