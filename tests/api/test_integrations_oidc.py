"""Keyless pipelines (issue 19, capability 4): a CI job's OIDC identity token (GitHub Actions' shape,
RS256, made by the test with its own keys and served by a local issuer with discovery and a JWKS) is
exchanged at /api/v1/oidc/token/ for a short-lived service token; trust policies name the issuer, the
audience and required claims and are four-eyed; `accessgov login --oidc` does it from a job."""

import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
import time_machine
from django.test import Client
from django.urls import reverse

from accessgov.integrations import oidc_trust
from accessgov.models import AccessEvent, AccessRequest, ApiToken, ChangeRequest, Eligibility, OidcTrustPolicy, User
from accessgov.services import changes as change_services
from tests.support.fake_providers import ACTIONS_REQUEST_TOKEN, Signer
from tests.support.integration_world import T0

AUDIENCE = "https://accessgov.example.com"
REPOSITORY = "acme/payments"


@pytest.fixture
def signer():
    return Signer("key-2026-11")


@pytest.fixture
def pipeline(fake, world, signer):
    """A service account eligible for the role, and a trust policy for acme/payments' production deploys."""
    oidc_trust.jwks_cache_clear()
    fake.state.jwks = [signer.jwk()]
    account = User(username="deploy-bot", is_service_account=True)
    account.set_unusable_password()
    account.save()
    Eligibility.objects.create(role=world.role, user=account, starts_at=T0 - timedelta(days=1))
    world.role.approvals_required = 0
    world.role.save()
    policy = OidcTrustPolicy.objects.create(
        name="payments deploys",
        issuer=fake.url + "/oidc",
        audience=AUDIENCE,
        required_claims={"repository": REPOSITORY, "ref": "refs/heads/main", "environment": "production"},
        service_account=account,
        role_ids=[world.role.pk],
        token_lifetime=timedelta(minutes=15),
    )
    yield policy
    oidc_trust.jwks_cache_clear()


def claims(fake, **overrides) -> dict:
    now = int(T0.timestamp())
    base = {
        "iss": fake.url + "/oidc",
        "aud": AUDIENCE,
        "sub": f"repo:{REPOSITORY}:environment:production",
        "repository": REPOSITORY,
        "repository_owner": "acme",
        "ref": "refs/heads/main",
        "environment": "production",
        "workflow": "deploy",
        "sha": "0123456789abcdef",
        "run_id": "4242",
        "jti": str(uuid.uuid4()),
        "iat": now,
        "nbf": now,
        "exp": now + 300,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def exchange(token: str):
    return Client().post(
        reverse("api:oidc_token"), data="{}", content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )


@pytest.mark.django_db
def test_a_trusted_pipeline_gets_a_short_lived_token_limited_to_its_roles(fake, world, pipeline, signer, at_t0):
    response = exchange(signer.token(claims(fake)))
    assert response.status_code == 201, response.content
    answer = response.json()
    assert answer["service_account"] == "deploy-bot" and answer["roles"] == ["payments-db/read-write"]
    token = ApiToken.objects.get(user__username="deploy-bot")
    assert token.kind == ApiToken.Kind.SERVICE and token.expires_at == T0 + timedelta(minutes=15)
    event = AccessEvent.objects.get(event_type=AccessEvent.Type.TOKEN_OIDC_EXCHANGED)
    assert event.data["claims"]["repository"] == REPOSITORY and event.data["claims"]["run_id"] == "4242"
    api = Client(HTTP_AUTHORIZATION=f"Bearer {answer['token']}")
    body = {"role": "payments-db/read-write", "duration_seconds": 1800, "justification": "Deploy 2026.11 from CI"}
    created = api.post("/api/v1/requests/", data=body, content_type="application/json")
    assert created.status_code == 201 and created.json()["status"] == "approved"
    other = api.post("/api/v1/requests/", data={**body, "role": "payments-db/admin"}, content_type="application/json")
    assert other.status_code == 400
    at_t0.shift(timedelta(minutes=16))
    assert api.get("/api/v1/requests/").json()["error"]["code"] == "token_expired"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("wrong repository", "match no trust policy"),
        ("wrong ref", "match no trust policy"),
        ("wrong audience", "audience"),
        ("expired", "expired"),
        ("unknown key", "does not publish"),
        ("forged signature", "signature"),
        ("unknown issuer", "No trust policy"),
        ("issuer not a string", "No trust policy"),
        ("no jti", "not acceptable"),
        ("HS256", "Only RS256"),
        ("unsigned", "Only RS256"),
        ("garbage", "not an identity token"),
        ("an AccessGov token", "not an AccessGov token"),
        # Read before the signature is checked: text no database can compare was a 500 at the issuer lookup.
        ("issuer with a lone surrogate", "not an identity token"),
        ("jti with a lone surrogate", "not an identity token"),
        ("claims nested 40 deep", "not an identity token"),
        # Each token is exchanged once while its use is remembered (a day): one valid for longer is refused.
        ("valid for 3 days", "more than 6 hours"),
        ("valid for 31 years", "more than 6 hours"),
        ("jti of 201 characters", "jti must be text"),
        ("jti a number", "InvalidJTIError"),
    ],
)
def test_untrusted_identity_tokens_are_refused(fake, world, pipeline, signer, at_t0, case, why):
    stranger = Signer("key-2026-11")  # same kid, another private key
    tokens = {
        "wrong repository": lambda: signer.token(claims(fake, repository="evil/payments")),
        "wrong ref": lambda: signer.token(claims(fake, ref="refs/heads/feature")),
        "wrong audience": lambda: signer.token(claims(fake, aud="https://elsewhere.example.com")),
        "expired": lambda: signer.token(claims(fake, exp=int(T0.timestamp()) - 60, iat=int(T0.timestamp()) - 400)),
        "unknown key": lambda: Signer("key-rogue").token(claims(fake)),
        "forged signature": lambda: stranger.token(claims(fake)),
        "unknown issuer": lambda: signer.token(claims(fake, iss="https://token.actions.example.com")),
        "issuer not a string": lambda: signer.token_of_any_claims(claims(fake, iss=["https://a.example", "b"])),
        "no jti": lambda: signer.token(claims(fake, jti=None)),
        "HS256": lambda: jwt.encode(claims(fake), "a-shared-secret-of-enough-length!", algorithm="HS256"),
        "unsigned": lambda: jwt.encode(claims(fake), None, algorithm="none"),
        "garbage": lambda: "x" * 50,
        "an AccessGov token": lambda: "agv_s_" + "a" * 43,
        "issuer with a lone surrogate": lambda: stranger.token_of_any_claims(claims(fake, iss="\ud800")),
        "jti with a lone surrogate": lambda: signer.token_of_any_claims(claims(fake, jti="\ud800")),
        "claims nested 40 deep": lambda: signer.token_of_any_claims({**claims(fake), "x": _nested(40)}),
        "valid for 3 days": lambda: signer.token(claims(fake, exp=int(T0.timestamp()) + 3 * 86400)),
        "valid for 31 years": lambda: signer.token(claims(fake, exp=int(T0.timestamp()) + 10**9)),
        "jti of 201 characters": lambda: signer.token(claims(fake, jti="y" * 201)),
        "jti a number": lambda: signer.token_of_any_claims(claims(fake, jti=12345)),
    }
    response = exchange(tokens[case]())
    assert response.status_code == 401, (case, response.content)
    assert why in response.json()["error"]["message"], response.json()
    assert not ApiToken.objects.exists()
    assert not AccessEvent.objects.filter(event_type=AccessEvent.Type.TOKEN_OIDC_EXCHANGED).exists()


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.django_db
def test_an_identity_token_is_exchanged_once(fake, pipeline, signer, at_t0):
    token = signer.token(claims(fake))
    assert exchange(token).status_code == 201
    again = exchange(token)
    assert again.status_code == 400 and "already exchanged" in again.json()["error"]["message"]
    assert ApiToken.objects.count() == 1


@pytest.mark.django_db
def test_a_token_valid_for_the_longest_allowed_is_still_refused_after_the_sweep_forgot_nothing(
    fake, pipeline, signer, at_t0
):
    from accessgov.services.integrations import integrations_sweep

    token = signer.token(claims(fake, exp=int(T0.timestamp()) + oidc_trust.MAX_IDENTITY_TOKEN_SECONDS))
    assert exchange(token).status_code == 201
    at_t0.shift(timedelta(seconds=oidc_trust.MAX_IDENTITY_TOKEN_SECONDS - 60))
    integrations_sweep(T0 + timedelta(seconds=oidc_trust.MAX_IDENTITY_TOKEN_SECONDS - 60))
    again = exchange(token)
    assert again.status_code == 400 and "already exchanged" in again.json()["error"]["message"]


@pytest.mark.django_db
def test_rotated_keys_are_fetched_again_and_a_dead_issuer_is_a_503(fake, pipeline, signer, at_t0):
    assert exchange(signer.token(claims(fake))).status_code == 201  # key-2026-11 is now cached
    rotated = Signer("key-2026-12")
    fake.state.jwks = [signer.jwk(), rotated.jwk()]
    at_t0.shift(timedelta(seconds=61))
    assert exchange(rotated.token(claims(fake, iat=int(T0.timestamp()) + 61))).status_code == 201
    jwks_fetches = fake.calls_to("/oidc/jwks")
    assert len(jwks_fetches) == 2
    oidc_trust.jwks_cache_clear()
    fake.state.jwks = []
    pipeline.issuer = "https://127.0.0.1:9/oidc"
    pipeline.save()
    dead = exchange(signer.token(claims(fake, iss="https://127.0.0.1:9/oidc")))
    assert dead.status_code == 503 and dead.json()["error"]["code"] == "issuer_unavailable"


@pytest.mark.django_db
def test_a_trust_policy_is_four_eyed(fake, world, make_user, pipeline):
    first = make_user("admin-one", is_staff=True, is_superuser=True)
    second = make_user("admin-two", is_staff=True, is_superuser=True)
    draft = OidcTrustPolicy(
        name="widen",
        issuer=fake.url + "/oidc",
        audience=AUDIENCE,
        required_claims={"repository": "acme/*"},
        service_account=pipeline.service_account,
        role_ids=[world.role.pk],
    )
    change = change_services.change_propose(
        first,
        kind=ChangeRequest.Kind.OIDC_TRUST_POLICY,
        instance=draft,
        fields=[
            "name",
            "issuer",
            "audience",
            "required_claims",
            "service_account",
            "role_ids",
            "scopes",
            "token_lifetime",
            "is_active",
        ],
    )
    assert change.status == ChangeRequest.Status.PENDING
    assert not OidcTrustPolicy.objects.filter(name="widen").exists()
    with pytest.raises(Exception, match="own policy change"):
        change_services.change_approve(first, change.pk)
    change_services.change_approve(second, change.pk)
    policy = OidcTrustPolicy.objects.get(name="widen")
    assert policy.required_claims == {"repository": "acme/*"} and policy.role_ids == [world.role.pk]


@pytest.mark.django_db
def test_a_trust_policy_needs_claims_roles_and_a_short_lifetime(fake, pipeline):
    from django.core.exceptions import ValidationError

    pipeline.required_claims, pipeline.role_ids, pipeline.token_lifetime = {}, [], timedelta(hours=2)
    with pytest.raises(ValidationError) as error:
        pipeline.full_clean()
    text = str(error.value)
    assert "required claim" in text and "roles" in text and "1 hour" in text


CONSOLE_SCRIPT = Path(sys.executable).parent / "accessgov"


@pytest.mark.django_db(transaction=True)
def test_accessgov_login_oidc_then_request_wait_in_a_github_actions_job(
    fake, world, pipeline, signer, live_server, tmp_path
):
    """The documented GitHub Actions steps, as the CLI runs them: `accessgov login --oidc` asks the
    job's token service for an identity token (audience: the portal), trades it, saves the token; then
    `accessgov request … --wait` uses it."""
    with time_machine.travel(T0, tick=True):
        fake.state.actions_token = signer.token(claims(fake, aud=live_server.url))
        pipeline.audience = live_server.url
        pipeline.save()
        environment = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ACCESSGOV_")},
            "HOME": str(tmp_path),
            "ACCESSGOV_URL": live_server.url,
            "GITHUB_ACTIONS": "true",
            "ACTIONS_ID_TOKEN_REQUEST_URL": fake.url + "/oidc/actions-token?api-version=2.0",
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": ACTIONS_REQUEST_TOKEN,
            "SSL_CERT_FILE": fake.ca_file,
        }
        login = subprocess.run(
            [str(CONSOLE_SCRIPT), "login", "--oidc"], env=environment, capture_output=True, text=True, timeout=60
        )
        assert login.returncode == 0, login.stderr
        secret = ApiToken.objects.get(user__username="deploy-bot")
        assert login.stdout.startswith("::add-mask::agv_s_")
        config = tmp_path / ".config" / "accessgov" / "config.toml"
        assert config.stat().st_mode & 0o777 == 0o600
        assert "Signed in as deploy-bot" in login.stderr and secret.display_prefix in config.read_text()
        request = subprocess.run(
            [str(CONSOLE_SCRIPT), "--quiet", "request", "payments-db/read-write", "--for", "30m",
             "--reason", "Deploy acme/payments@0123abcd (run 4242)", "--wait", "--timeout", "60s"],
            env=environment, capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        assert request.returncode == 0, request.stderr
        access_request = AccessRequest.objects.get(requester__username="deploy-bot")
        assert request.stdout.strip() == str(access_request.grant.pk)
        submitted = AccessEvent.objects.get(access_request=access_request, event_type="request.submitted")
        assert submitted.data["via"]["api_token_id"] == secret.pk
        # The job's token service refuses a wrong request token: the CLI says so and exits non-zero.
        environment["ACTIONS_ID_TOKEN_REQUEST_TOKEN"] = "wrong"
        refused = subprocess.run(
            [str(CONSOLE_SCRIPT), "login", "--oidc"], env=environment, capture_output=True, text=True, timeout=60
        )
        assert refused.returncode != 0 and "identity token" in refused.stderr


@pytest.mark.django_db(transaction=True)
def test_accessgov_login_with_a_replayed_identity_token_exits_8(fake, world, pipeline, signer, live_server, tmp_path):
    """A probe's finding: the second exchange of one identity token ("already exchanged", a 400) exited 7; docs
    say 8 whenever AccessGov refuses the identity token."""
    with time_machine.travel(T0, tick=True):
        pipeline.audience = live_server.url
        pipeline.save()
        environment = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("ACCESSGOV_", "ACTIONS_"))},
            "HOME": str(tmp_path),
            "ACCESSGOV_URL": live_server.url,
            "ACCESSGOV_OIDC_TOKEN": signer.token(claims(fake, aud=live_server.url)),
        }
        login = [str(CONSOLE_SCRIPT), "login", "--oidc", "--print"]
        first = subprocess.run(login, env=environment, capture_output=True, text=True, timeout=60)
        assert first.returncode == 0, first.stderr
        again = subprocess.run(login, env=environment, capture_output=True, text=True, timeout=60)
        assert again.returncode == 8, again.stderr
        assert "AccessGov refused the identity token" in again.stderr and "already exchanged" in again.stderr
        assert "Traceback" not in again.stderr
    assert ApiToken.objects.count() == 1
