"""Signing in through the company's identity provider: a real OIDC provider process on loopback
(tests/support/oidc_provider.py), the portal's code flow with PKCE, state and nonce, the ID token checks, the TOTP
step after it, accounts found by subject only, the provider's MFA accepted only when proven, linking,
and who can still sign in when the provider is down."""

from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import authenticate
from django.test import Client, override_settings
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from accessgov.exceptions import NotAuthorized
from accessgov.identity import oidc
from accessgov.models import AccessEvent, ChangeRequest, ExternalIdentity, IdentityProvider, User
from accessgov.services import changes as change_services
from tests.conftest import PASSWORD, add_totp_device, sign_in, totp_code
from tests.support.identity_support import make_identity_provider, sign_in_through

pytestmark = pytest.mark.django_db


@pytest.fixture
def idp(oidc_provider):
    return make_identity_provider(oidc_provider)


def _linked_person(oidc_provider, idp, username, *, device=True, **person):
    """A person at the provider and their (SCIM-provisioned-like) AccessGov account linked by subject."""
    claims = oidc_provider.add_person(username, "idp-pass-" + username, **person)
    user = User(username=username, email=claims["email"])
    user.set_unusable_password()
    user.save()
    ExternalIdentity.objects.create(provider=idp, user=user, subject=claims["sub"], user_name=username)
    if device:
        add_totp_device(user)
    return user, claims


def _session_user(client: Client):
    response = client.get(reverse("home"))
    return response


def test_a_person_signs_in_through_the_provider_then_passes_totp_and_reaches_home(oidc_provider, idp):
    user, _ = _linked_person(oidc_provider, idp, "ada")
    client = Client()
    start = client.get(f"/sso/{idp.slug}/start/?next=/access/")
    query = parse_qs(urlsplit(start["Location"]).query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["nonce"][0] and query["state"][0] and query["scope"] == ["openid email profile"]
    before = client.session.session_key
    callback = sign_in_through(client, oidc_provider, idp.slug, "ada", "idp-pass-ada", start=start)
    assert callback.status_code == 302
    assert callback["Location"].startswith("/accounts/otp/?next=%2Faccess%2F")
    assert client.session.session_key != before  # a new session id after the provider step
    assert client.get("/access/")["Location"].startswith("/accounts/otp/")  # not in yet: TOTP first
    device = TOTPDevice.objects.get(user=user)
    done = client.post(callback["Location"], {"otp_token": totp_code(device)})
    assert done.status_code == 302 and done["Location"] == "/access/"
    assert client.get("/access/").status_code == 200
    event = AccessEvent.objects.get(event_type=AccessEvent.Type.IDENTITY_SIGNED_IN)
    assert event.actor == user and event.data["idp"] == idp.slug and event.data["amr"] == ["pwd"]
    assert event.data["second_factor"] == "totp" and event.data["subject"] == "sub-ada"
    assert client.session["sso"]["idp"] == idp.slug and client.session["sso"]["mfa_from_idp"] is False


def test_a_person_without_an_authenticator_is_sent_to_enrolment_after_the_provider(oidc_provider, idp):
    _linked_person(oidc_provider, idp, "newhire", device=False)
    callback = sign_in_through(Client(), oidc_provider, idp.slug, "newhire", "idp-pass-newhire")
    assert callback["Location"].startswith("/accounts/enrol/")


@pytest.mark.parametrize(
    "mode",
    [
        "tamper",
        "wrong_nonce",
        "wrong_audience",
        "unknown_key",
        "wrong_issuer",
        "expired",
        "alg_none",
        "hs256",
        "extra_audience",
    ],
)
def test_a_spoilt_id_token_signs_nobody_in(oidc_provider, idp, mode):
    _linked_person(oidc_provider, idp, f"victim-{mode}")
    client = Client()
    oidc_provider.spoil_next(mode)
    callback = sign_in_through(client, oidc_provider, idp.slug, f"victim-{mode}", f"idp-pass-victim-{mode}")
    assert callback.status_code == 403
    assert "could not verify" in callback.content.decode()
    assert "_auth_user_id" not in client.session
    assert not AccessEvent.objects.filter(event_type=AccessEvent.Type.IDENTITY_SIGNED_IN).exists()
    assert client.get(reverse("accounts:otp"))["Location"].startswith("/accounts/login/")


def test_a_state_works_once_and_only_in_the_browser_that_started_it(oidc_provider, idp):
    _linked_person(oidc_provider, idp, "once")
    client = Client()
    start = client.get(f"/sso/{idp.slug}/start/")
    query = dict(parse_qs(urlsplit(start["Location"]).query))
    import requests

    answer = requests.post(
        f"{oidc_provider.issuer}/authorize",
        data={k: v[0] for k, v in query.items()} | {"username": "once", "password": "idp-pass-once"},
        allow_redirects=False,
        timeout=5,
    )
    back = urlsplit(answer.headers["Location"])
    stranger = Client().get(f"{back.path}?{back.query}")  # another browser: no such state in its session
    assert stranger.status_code == 400
    first = client.get(f"{back.path}?{back.query}")
    assert first.status_code == 302 and first["Location"].startswith("/accounts/otp/")
    replay = Client()
    replay.cookies = client.cookies
    again = replay.get(f"{back.path}?{back.query}")
    assert again.status_code == 400  # the state was spent


def test_an_unknown_state_or_a_provider_error_is_refused(oidc_provider, idp):
    client = Client()
    assert client.get(f"/sso/{idp.slug}/callback/?code=x&state=forged").status_code == 400
    assert client.get(f"/sso/{idp.slug}/callback/?state=" + "a" * 5000).status_code == 400
    start = client.get(f"/sso/{idp.slug}/start/")
    state = parse_qs(urlsplit(start["Location"]).query)["state"][0]
    denied = client.get(f"/sso/{idp.slug}/callback/?error=access_denied&state={state}")
    assert denied.status_code == 403
    assert client.get(f"/sso/{idp.slug}/callback/?code=x&state={state}").status_code == 400  # spent by the error
    assert client.get("/sso/no-such-idp/start/").status_code == 404


def test_accounts_are_found_by_subject_never_by_email(oidc_provider, idp, make_user):
    local = make_user("grace", email="grace@example.com")
    oidc_provider.add_person("grace-idp", "idp-pass-g", sub="sub-grace", email="grace@example.com")
    refused = sign_in_through(Client(), oidc_provider, idp.slug, "grace-idp", "idp-pass-g")
    assert refused.status_code == 403 and "No AccessGov account" in refused.content.decode()
    idp.jit_create_users = True
    idp.save()
    client = Client()
    created = sign_in_through(client, oidc_provider, idp.slug, "grace-idp", "idp-pass-g")
    assert created.status_code == 302 and created["Location"].startswith("/accounts/enrol/")
    new = User.objects.get(external_identities__subject="sub-grace")
    assert new.pk != local.pk and new.username == "grace-idp" and not new.has_usable_password()
    assert int(client.session["_auth_user_id"]) == new.pk
    event = AccessEvent.objects.get(event_type=AccessEvent.Type.IDENTITY_USER_CREATED)
    assert event.actor_label == f"system:idp:{idp.slug}" and event.data["via_sso"] is True


def test_just_in_time_usernames_never_collide_with_local_accounts(oidc_provider, idp, make_user):
    make_user("sam")
    idp.jit_create_users = True
    idp.save()
    oidc_provider.add_person("sam", "idp-pass-sam", sub="sub-sam-idp")
    sign_in_through(Client(), oidc_provider, idp.slug, "sam", "idp-pass-sam")
    assert User.objects.get(external_identities__subject="sub-sam-idp").username == "sam-2"
    # A full-width "sam" is "sam" too (numbered); a name mixing look-alike alphabets is not used at all.
    oidc_provider.add_person("\uff53\uff41\uff4d", "idp-pass-fw", sub="sub-sam-fw")
    sign_in_through(Client(), oidc_provider, idp.slug, "\uff53\uff41\uff4d", "idp-pass-fw")
    assert User.objects.get(external_identities__subject="sub-sam-fw").username == "sam-3"
    oidc_provider.add_person("s\u0430m", "idp-pass-mixed", sub="sub-sam-mixed")  # a Cyrillic a
    sign_in_through(Client(), oidc_provider, idp.slug, "s\u0430m", "idp-pass-mixed")
    assert User.objects.get(external_identities__subject="sub-sam-mixed").username == f"{idp.slug}-user"


def test_a_deactivated_or_service_account_never_signs_in_through_the_provider(oidc_provider, idp):
    user, _ = _linked_person(oidc_provider, idp, "leaver")
    User.objects.filter(pk=user.pk).update(is_active=False)
    refused = sign_in_through(Client(), oidc_provider, idp.slug, "leaver", "idp-pass-leaver")
    assert refused.status_code == 403 and "deactivated" in refused.content.decode()
    machine, _ = _linked_person(oidc_provider, idp, "robot", device=False)
    User.objects.filter(pk=machine.pk).update(is_service_account=True)
    assert sign_in_through(Client(), oidc_provider, idp.slug, "robot", "idp-pass-robot").status_code == 403
    assert not AccessEvent.objects.filter(event_type=AccessEvent.Type.IDENTITY_SIGNED_IN).exists()


def test_the_providers_mfa_replaces_totp_only_when_accepted_and_proven_by_amr_or_acr(oidc_provider, idp):
    idp.accept_idp_mfa = True
    idp.mfa_acr_values = "urn:example:loa:high"
    idp.save()
    _linked_person(oidc_provider, idp, "strong", amr=["pwd", "mfa", "otp"])
    client = Client()
    callback = sign_in_through(client, oidc_provider, idp.slug, "strong", "idp-pass-strong")
    assert callback["Location"] == "/"
    home = client.get("/")
    assert home.status_code == 200  # verified: no TOTP asked
    assert client.session["sso"]["amr"] == ["pwd", "mfa", "otp"] and client.session["sso"]["mfa_from_idp"] is True
    event = AccessEvent.objects.filter(event_type=AccessEvent.Type.IDENTITY_SIGNED_IN).latest("sequence")
    assert event.data["second_factor"] == "idp-mfa"
    # Step-up still needs the portal's own TOTP: the IdP's MFA is not a fresh code.
    from accessgov.otp import SESSION_OTP_VERIFIED_AT

    assert SESSION_OTP_VERIFIED_AT not in client.session
    _linked_person(oidc_provider, idp, "acr-person", amr=["pwd"], acr="urn:example:loa:high")
    assert sign_in_through(Client(), oidc_provider, idp.slug, "acr-person", "idp-pass-acr-person")["Location"] == "/"
    _linked_person(oidc_provider, idp, "weak", amr=["pwd"], acr="urn:example:loa:low")
    weak = sign_in_through(Client(), oidc_provider, idp.slug, "weak", "idp-pass-weak")
    assert weak["Location"].startswith("/accounts/otp/")
    idp.accept_idp_mfa = False
    idp.save()
    off = sign_in_through(Client(), oidc_provider, idp.slug, "strong", "idp-pass-strong")
    assert off["Location"].startswith("/accounts/otp/")  # proven, but not accepted: TOTP as usual


def test_the_idp_mfa_device_is_never_offered_as_an_authenticator(oidc_provider, idp):
    from django_otp import devices_for_user, user_has_device

    idp.accept_idp_mfa = True
    idp.save()
    user, _ = _linked_person(oidc_provider, idp, "nodevice", device=False, amr=["mfa"])
    sign_in_through(Client(), oidc_provider, idp.slug, "nodevice", "idp-pass-nodevice")
    assert not user_has_device(user) and list(devices_for_user(user, confirmed=None)) == []
    from accessgov.models import IdentityProviderMFA

    device = IdentityProviderMFA.objects.get(user=user)
    assert device.verify_token("123456") is False


def test_a_signed_in_person_links_their_own_account_and_then_signs_in_with_the_provider(oidc_provider, idp, make_user):
    local = make_user("linda")
    oidc_provider.add_person("linda.idp", "idp-pass-l", sub="sub-linda")
    client = sign_in(Client(), local)
    assert "Link to Test IdP" in client.get(reverse("accounts:security")).content.decode()
    start = client.post(reverse("sso:link", args=[idp.slug]))
    linked = sign_in_through(client, oidc_provider, idp.slug, "linda.idp", "idp-pass-l", start=start)
    assert linked["Location"] == reverse("accounts:security")
    assert ExternalIdentity.objects.get(provider=idp, user=local).subject == "sub-linda"
    assert AccessEvent.objects.get(event_type=AccessEvent.Type.IDENTITY_LINKED).actor == local
    fresh = Client()
    again = sign_in_through(fresh, oidc_provider, idp.slug, "linda.idp", "idp-pass-l")
    assert again["Location"].startswith("/accounts/otp/") and int(fresh.session["_auth_user_id"]) == local.pk
    # Someone else cannot link the same provider account to theirs.
    other = sign_in(Client(), make_user("mallory"))
    start = other.post(reverse("sso:link", args=[idp.slug]))
    stolen = sign_in_through(other, oidc_provider, idp.slug, "linda.idp", "idp-pass-l", start=start)
    assert stolen.status_code == 403 and "already linked" in stolen.content.decode()


def test_linking_needs_a_verified_session(oidc_provider, idp, make_user):
    half = Client()
    half.post(reverse("accounts:login"), {"username": make_user("halfway").username, "password": PASSWORD})
    response = half.post(reverse("sso:link", args=[idp.slug]))
    assert response.status_code == 302 and response["Location"].startswith("/accounts/otp/")


def test_the_oidc_backend_never_answers_the_password_form(oidc_provider, idp):
    from django.test import RequestFactory

    user, _ = _linked_person(oidc_provider, idp, "pw")
    request = RequestFactory().post("/accounts/login/")
    request.client_address = "127.0.0.1"
    assert authenticate(request, username="pw", password="") is None
    assert authenticate(request, username=user.username, password="idp-pass-pw") is None
    assert oidc.OIDCBackend().authenticate(request, nonce="n", code_verifier="v") is None


def test_when_the_provider_is_down_only_password_accounts_sign_in(oidc_provider, idp, make_user):
    idp.issuer = "http://127.0.0.1:9"  # nothing listens on the discard port
    idp.save()
    response = Client().get(f"/sso/{idp.slug}/start/")
    assert response.status_code == 503
    assert "cannot be reached" in response.content.decode()
    admin = make_user("breakglass")
    with override_settings(PASSWORD_SIGN_IN="break-glass", BREAK_GLASS_USERNAMES=["breakglass"]):
        assert sign_in(Client(), admin).get("/").status_code == 200
        refused = Client().post(
            reverse("accounts:login"), {"username": make_user("ordinary").username, "password": PASSWORD}
        )
        assert refused.status_code == 200 and "_auth_user_id" not in refused.client.session


def test_the_login_page_offers_the_provider_only_when_one_is_enabled(oidc_provider, idp):
    page = Client().get(reverse("accounts:login")).content.decode()
    assert "Sign in with Test IdP" in page and f"/sso/{idp.slug}/start/" in page
    IdentityProvider.objects.update(is_enabled=False)
    assert "Sign in with" not in Client().get(reverse("accounts:login")).content.decode()
    assert Client().get(f"/sso/{idp.slug}/start/").status_code == 404


def test_provider_settings_are_four_eyed_and_the_client_secret_is_write_only(make_user, settings):
    settings.OIDC_ALLOW_HTTP_ISSUER = False
    first = make_user("admin1", is_staff=True, is_superuser=True)
    second = make_user("admin2", is_staff=True, is_superuser=True)
    proposed = IdentityProvider(
        slug="okta",
        name="Okta",
        kind="okta",
        is_enabled=True,
        issuer="https://example.okta.com",
        client_id="0oa-client",
        client_secret="very-secret-client-secret",
    )
    change = change_services.change_propose(
        first,
        kind=ChangeRequest.Kind.IDENTITY_PROVIDER,
        instance=proposed,
        fields=["slug", "name", "kind", "is_enabled", "issuer", "client_id", "client_secret"],
    )
    assert change.status == ChangeRequest.Status.PENDING and not IdentityProvider.objects.exists()
    assert change.changes["client_secret"]["new"] == change_services.MASK
    assert "very-secret" not in str(change.payload) and "very-secret" not in str(change.changes)
    with pytest.raises(NotAuthorized):
        change_services.change_approve(first, change.pk)
    change_services.change_approve(second, change.pk)
    created = IdentityProvider.objects.get(slug="okta")
    assert created.client_secret == "very-secret-client-secret"
    change.refresh_from_db()
    assert change.secret_payload == ""
    ledger = " ".join(str(e.data) + e.reason for e in AccessEvent.objects.all())
    assert "very-secret" not in ledger
    insecure = IdentityProvider(slug="plain", name="Plain", issuer="http://idp.example.com", client_id="x")
    with pytest.raises(change_services.PolicyViolation):
        change_services.change_propose(
            first, kind=ChangeRequest.Kind.IDENTITY_PROVIDER, instance=insecure, fields=["slug"]
        )


def test_in_the_admin_switching_off_applies_at_once_and_switching_on_waits(make_user, oidc_provider, settings):
    from tests.conftest import verify_session

    settings.OIDC_ALLOW_HTTP_ISSUER = True  # the provider process listens on plain http, on loopback
    idp = make_identity_provider(oidc_provider, slug="adm")
    admin = make_user("root", is_staff=True, is_superuser=True)
    client = verify_session(Client(), admin)
    url = reverse("admin:accessgov_identityprovider_change", args=[idp.pk])
    page = client.get(url).content.decode()
    assert oidc_provider.client_secret not in page  # write-only
    form = {
        "name": idp.name,
        "slug": idp.slug,
        "kind": idp.kind,
        "issuer": idp.issuer,
        "client_id": idp.client_id,
        "client_secret": "",
        "scopes": idp.scopes,
        "subject_claim": "sub",
        "username_claim": "preferred_username",
        "mfa_amr_values": idp.mfa_amr_values,
        "mfa_acr_values": "",
        "scim_service_account": "",
    }
    off = client.post(url, form)  # is_enabled unticked: narrowing
    assert off.status_code == 302, off.context["adminform"].form.errors
    idp.refresh_from_db()
    assert idp.is_enabled is False and idp.client_secret == oidc_provider.client_secret
    on = client.post(url, {**form, "is_enabled": "on", "jit_create_users": "on"})
    assert on.status_code == 302 and "/changes/" in on["Location"]
    idp.refresh_from_db()
    assert idp.is_enabled is False and idp.jit_create_users is False
    assert ChangeRequest.objects.filter(kind=ChangeRequest.Kind.IDENTITY_PROVIDER, status="pending").count() == 1
