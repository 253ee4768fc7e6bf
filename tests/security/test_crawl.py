"""One crawl per persona of every URL pattern (read from the resolver, so new views and the REST API are
covered as they land), the pages about real objects and the pages that show hostile text. Each URL is
visited once per method, and each response is checked for all of these at once:

- status: the declared matrix (anonymous → sign-in, password-only → the OTP step, no authenticator →
  enrolment, the API refuses sessions, verified → never a 5xx and never sent back to a factor);
- security headers (CSP, HSTS, nosniff, frame and referrer policy, no-store) and no inline script;
- escaping: no hostile payload as markup in any HTML, the pages that show hostile text answer 200, and
  each persona's crawl meets the hostile fields it is declared to show.

All problems of a persona's crawl are collected and reported together."""

from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.urls import Resolver404, resolve, reverse
from django.utils.html import escape

from accessgov import middleware
from tests.conftest import verify_session
from tests.support.api_helpers import api_client, make_token
from tests.support.crawl import (
    URLS,
    hardening_problems,
    pages_by_persona,
    persona_client,
    raw_markup,
    real_object_urls,
)
from tests.support.security_world import FIELDS, marker

# The declared matrix: who may reach what without the full two factors.
EXPECTED_PUBLIC = {
    "accounts:login",
    "healthz",
    "healthz_ready",
    "metrics",
    "sso:start",
    "sso:callback",
    "slack_interactivity",
    "jira_webhook",
    "github_webhook",
}
# Open to someone not signed in because the link is the proof (an account recovery's one-time link): a made-up
# one is a 400. A password-only session goes to the OTP step first, as everywhere.
EXPECTED_LINK_PROVEN = {"accounts:recover"}
# Public, but authenticated by the provider's signature: without one, refused (401), never served.
EXPECTED_PROVIDER_SIGNED = {"slack_interactivity", "jira_webhook", "github_webhook"}
EXPECTED_HALF_AUTHENTICATED = {"accounts:otp", "accounts:enrol", "accounts:enrol_qr", "accounts:logout"}
# The REST API: token-authenticated; the session never counts (JSON 401, never a redirect), except that
# the schema also serves a session that passed the OTP step. Its own persona-by-token matrix is in
# tests/api/test_api_matrix.py.
EXPECTED_TOKEN_NAMESPACE = "api"
EXPECTED_SESSION_SCHEMA = {"api:schema"}
# SCIM (an identity provider's provisioning client): its own token, SCIM errors, never a session.
EXPECTED_SCIM_NAMESPACE = "scim"

TOKEN_HOLDER = "token holder"  # the API's own matrix is tests/api/test_api_matrix.py; here: no 5xx
NO_SUCH_PAGE = "/no-such-page/"
LOGOUT = "accounts:logout"

VERIFIED = ("member", "requester", "approver", "owner", "auditor", "admin")
PERSONAS = ("anonymous", "password-only", "password-only without device", *VERIFIED)
# Who also POSTs (an empty body) to the URLs: the three without both factors, a verified person without
# any rights, and three with rights. (The admin's POSTs are the fuzz's, tests/security/test_fuzz.py.)
POSTING = ("anonymous", "password-only", "password-only without device", "member", "requester", "approver", "auditor")

# What each persona's GET crawl must meet, so a crawl that only ever saw redirects cannot pass: the
# statuses, the content types and the hostile fields shown (escaped) in its HTML.
MUST_SEE_STATUS = {
    "anonymous": {200, 302, 401, 404, 405},
    "password-only": {200, 302, 401, 405},
    "password-only without device": {200, 302, 401, 405},
    "member": {200, 302, 401, 403, 404, 405},
    "requester": {200, 302, 401, 403, 404, 405},
    "approver": {200, 302, 401, 403, 404, 405},
    "owner": {200, 302, 401, 403, 404, 405},
    "auditor": {200, 302, 401, 403, 404, 405},
    "admin": {200, 302, 401, 403, 404, 405},
}
MUST_SEE_TYPE = {
    "anonymous": {"text/html", "application/json"},
    "password-only": {"text/html", "application/json"},
    "password-only without device": {"text/html", "application/json"},
    "member": {"text/html", "text/csv", "application/json"},
    "requester": {"text/html", "text/csv", "application/json"},
    "approver": {"text/html", "text/csv", "application/json"},
    "owner": {"text/html", "text/csv", "application/json"},
    "auditor": {"text/html", "text/csv", "application/json"},
    "admin": {"text/html", "text/csv", "application/json"},
}
# The hostile fields each persona's pages show: everything but what is not theirs to see.
_NOT_ON_ANY_PAGE_OF = {
    "requester": {"denial comment", "eligibility reason", "review name", "review comment", "role description"},
    "approver": {
        "break-glass reason",
        "follow-up comment",
        "eligibility reason",
        "review name",
        "review comment",
        "role description",
    },
    "owner": {"eligibility reason", "revocation reason", "role description"},
    "auditor": set(),
    "admin": set(),
}
MUST_SHOW = {
    persona: set(FIELDS) - _NOT_ON_ANY_PAGE_OF[persona] if persona in _NOT_ON_ANY_PAGE_OF else set()
    for persona in PERSONAS
}


def _name_of(url: str) -> str | None:
    try:
        return resolve(urlsplit(url).path).view_name
    except Resolver404:
        return None


def _is_api(name: str | None) -> bool:
    return (name or "").startswith((f"{EXPECTED_TOKEN_NAMESPACE}:", f"{EXPECTED_SCIM_NAMESPACE}:"))


def _resolver_urls() -> dict[str, str | None]:
    """Every URL pattern once (the admin's login is listed twice by the resolver: keep its name)."""
    urls: dict[str, str | None] = {}
    for url, name in URLS:
        if urls.get(url) is None:
            urls[url] = name
    return urls


def _api_refusal_problems(response, url: str) -> list[str]:
    problems = []
    if response.status_code != 401:
        return [f"the API answers {response.status_code} without a token, expected 401"]
    if not response.get("WWW-Authenticate", "").startswith("Bearer"):
        problems.append(f"WWW-Authenticate is {response.get('WWW-Authenticate')!r}, expected Bearer")
    content_type = "application/scim+json" if url.startswith("/scim/") else "application/json"
    if response.get("Content-Type") != content_type:
        return [*problems, f"Content-Type is {response.get('Content-Type')!r}, expected {content_type}"]
    body = response.json()
    if url.startswith("/scim/"):
        if body.get("status") != "401":
            problems.append(f"SCIM status is {body.get('status')!r}, expected '401'")
    elif body.get("error", {}).get("code") != "not_authenticated":
        problems.append(f"error code is {body.get('error')!r}, expected not_authenticated")
    return problems


def _redirect_problems(response, target: str) -> list[str]:
    location = response.get("Location", "")
    if response.status_code != 302 or not location.startswith(target):
        return [f"expected 302 to {target}, got {response.status_code} to {location!r}"]
    return []


def status_problems(persona: str, method: str, url: str, name: str | None, response) -> list[str]:
    """The declared matrix for one response."""
    status, location = response.status_code, response.get("Location", "")
    if persona == TOKEN_HOLDER:
        return [f"server error {status}"] if status >= 500 else []
    if persona == "anonymous":
        if name in EXPECTED_PROVIDER_SIGNED:
            expected = 405 if method == "get" else 401
            return [] if status == expected else [f"a provider-signed view answers {status}, expected {expected}"]
        if name in EXPECTED_LINK_PROVEN:
            return [] if status == 400 else [f"a made-up one-time link answers {status}, expected 400"]
        if name in EXPECTED_PUBLIC:
            return [] if status in (200, 404, 405, 503) else [f"a public view answers {status}"]
        if _is_api(name):
            return _api_refusal_problems(response, url)
        return _redirect_problems(response, "/accounts/login/")
    if persona in ("password-only", "password-only without device"):
        if status >= 500 and not (name in EXPECTED_PUBLIC and status == 503):
            return [f"server error {status}"]
        if name in EXPECTED_PUBLIC or name in EXPECTED_HALF_AUTHENTICATED:
            return []
        if _is_api(name):
            return _api_refusal_problems(response, url)
        return _redirect_problems(response, "/accounts/otp/" if persona == "password-only" else "/accounts/enrol/")
    if status >= 500:
        return [f"server error {status}"]
    if method == "post":
        return []
    if _is_api(name):
        if name in EXPECTED_SESSION_SCHEMA:
            return [] if status == 200 else [f"the schema answers a verified session with {status}, expected 200"]
        return _api_refusal_problems(response, url)
    if location.startswith(("/accounts/otp/", "/accounts/enrol/")):
        return [f"a verified session is sent back to {location!r}"]
    if (
        persona == "admin"
        and (name or "").startswith("admin:")
        and status == 302
        and location.startswith("/admin/login/")
    ):
        return [f"staff is sent to the admin's sign-in ({location!r})"]
    if url == NO_SUCH_PAGE and (status != 404 or "Not found" not in response.content.decode()):
        return [f"an unknown URL answers {status}, expected the 404 page"]
    return []


@dataclass
class Crawl:
    """What one persona's crawl met: the problems, and the statuses, types and hostile fields seen."""

    persona: str
    label: str = ""
    problems: list[str] = field(default_factory=list)
    statuses: set[int] = field(default_factory=set)
    types: set[str] = field(default_factory=set)
    shown: set[str] = field(default_factory=set)
    responses: int = 0

    def visit(self, client: Client, method: str, url: str, name: str | None, *, must_be_200: bool = False) -> None:
        response = getattr(client, method)(url, secure=True)
        self.responses += 1
        where = f"{self.label or self.persona}: {method.upper()} {url} -> {response.status_code}"
        found = status_problems(self.persona, method, url, name, response)
        if must_be_200 and response.status_code != 200:
            found.append("a page that shows hostile text does not answer 200")
        if response.status_code >= 500 and response.exc_info:
            found = [f"{p} ({response.exc_info[1]!r})" for p in found]
        self.problems += [f"{where}: {p}" for p in found]
        self.problems += hardening_problems(response, where)
        content_type = response.get("Content-Type", "").split(";")[0]
        if content_type == "text/html" and not response.streaming:
            html = response.content.decode()
            self.problems += [f"{where}: hostile text as markup: {fragment!r}" for fragment in raw_markup(html)]
            if method == "get":
                self.shown |= {f for f in FIELDS if escape(marker(f)) in html}
        if method == "get":
            self.statuses.add(response.status_code)
            self.types.add(content_type)

    def coverage_problems(self) -> list[str]:
        problems = []
        if missing := MUST_SEE_STATUS[self.persona] - self.statuses:
            problems.append(
                f"{self.persona}: the crawl never met status {sorted(missing)} (saw {sorted(self.statuses)})"
            )
        if missing := MUST_SEE_TYPE[self.persona] - self.types:
            problems.append(f"{self.persona}: the crawl never met {sorted(missing)} (saw {sorted(self.types)})")
        if missing := MUST_SHOW[self.persona] - self.shown:
            problems.append(f"{self.persona}: never shown, so never checked: {sorted(missing)}")
        return problems

    def report(self) -> str:
        shown = self.problems[:60]
        more = f"\n… and {len(self.problems) - len(shown)} more" if len(self.problems) > len(shown) else ""
        header = f"{len(self.problems)} problem(s) in the {self.persona} crawl ({self.responses} responses):\n"
        return header + "\n".join(shown) + more


def _client(persona: str, world, hostile, make_user) -> Client:
    if persona == "password-only without device":
        client = Client(raise_request_exception=False)
        client.force_login(make_user("nodevice", device=False))
        return client
    if persona == "member":
        return verify_session(Client(raise_request_exception=False), make_user("member"))
    return persona_client(persona, world, hostile)


def _get_plan(persona: str, world, hostile) -> list[tuple[str, str | None, bool]]:
    """(url, name, shows hostile text) for each URL this persona GETs, once: the pages that show hostile
    text first (while the world is as built), then every URL pattern, then the pages about real objects."""
    plan: dict[str, tuple[str | None, bool]] = {}
    for url in pages_by_persona(world, hostile).get(persona, []):
        plan[url] = (_name_of(url), True)
    for url, name in _resolver_urls().items():
        plan.setdefault(url, (name, False))
    for url in real_object_urls(world, hostile):
        plan.setdefault(url, (_name_of(url), False))
    # GET of the sign-out ends the session; only the anonymous visitor (who has none) is sent it.
    return [(url, name, shows) for url, (name, shows) in plan.items() if persona == "anonymous" or name != LOGOUT]


def _post_plan(persona: str) -> list[tuple[str, str | None]]:
    urls = _resolver_urls()
    if persona == "anonymous":
        return [*urls.items(), (NO_SUCH_PAGE, None)]
    if persona.startswith("password-only"):
        plan = [(u, n) for u, n in urls.items() if n not in EXPECTED_PUBLIC and n not in EXPECTED_HALF_AUTHENTICATED]
        return [*plan, (NO_SUCH_PAGE, None)]
    named = [(u, n) for u, n in urls.items() if n and not n.startswith("admin:")]
    # Signing out last, so every other POST is made by the signed-in persona.
    return sorted(named, key=lambda entry: entry[1] == LOGOUT)


def test_the_crawl_covers_every_portal_view():
    names = {name for _, name in URLS}
    assert {"home", "accounts:security", "accounts:backup_codes", "admin:index"} <= names
    assert {"accounts:tokens", "accounts:token_revoke", "api_docs", "api:schema", "api:request_list"} <= names
    assert len(URLS) > 40  # admin + portal: a collapsed resolver walk would show here


def test_middleware_exemptions_match_the_declared_matrix():
    assert middleware.PUBLIC_VIEWS == EXPECTED_PUBLIC
    assert middleware.LINK_PROVEN_VIEWS == EXPECTED_LINK_PROVEN
    assert middleware.HALF_AUTHENTICATED_VIEWS == EXPECTED_HALF_AUTHENTICATED
    assert middleware.API_NAMESPACE == EXPECTED_TOKEN_NAMESPACE
    assert middleware.SCIM_NAMESPACE == EXPECTED_SCIM_NAMESPACE


def test_the_declared_coverage_meets_every_kind_of_response_and_every_hostile_field():
    """The union of what the personas' crawls must meet: every status and type a page can answer with,
    and every hostile field shown (escaped) on some page."""
    assert {200, 302, 401, 403, 404, 405} <= set().union(*MUST_SEE_STATUS.values())
    assert {"text/html", "text/csv", "application/json"} <= set().union(*MUST_SEE_TYPE.values())
    assert set().union(*MUST_SHOW.values()) == set(FIELDS)


@pytest.mark.django_db
@pytest.mark.parametrize("persona", PERSONAS)
def test_one_crawl_checks_status_headers_and_escaping_on_every_url(persona, world, hostile, make_user):
    client = _client(persona, world, hostile, make_user)
    crawl = Crawl(persona)
    for url, name, shows_hostile_text in _get_plan(persona, world, hostile):
        crawl.visit(client, "get", url, name, must_be_200=shows_hostile_text)
    if persona in POSTING:
        for url, name in _post_plan(persona):
            if name == LOGOUT and persona in VERIFIED:
                # Every POST so far was made signed in: the session has not ended on the way.
                home = client.get(reverse("home"), secure=True)
                if home.status_code != 200:
                    crawl.problems.append(
                        f"{persona}: the session ended during the POST crawl (home is {home.status_code})"
                    )
            crawl.visit(client, "post", url, name)
    crawl.problems += crawl.coverage_problems()
    assert crawl.problems == [], crawl.report()


@pytest.mark.django_db
def test_one_crawl_per_token_holder_checks_the_api_answers(world, hostile):
    """The REST API as each token holder (the crawl above sends no token: the API refuses it); the answers
    are the token-by-persona matrix's (tests/api/test_api_matrix.py), here: no 5xx and the headers."""
    api_urls = [url for url, name in _resolver_urls().items() if (name or "").startswith("api:")]
    api_urls += [url for url in real_object_urls(world, hostile) if url.startswith("/api/")]
    assert len(api_urls) > 10
    problems = []
    for persona in ("requester", "approver", "owner", "auditor", "admin"):
        user = hostile.admin if persona == "admin" else getattr(world, persona)
        _, secret = make_token(user)
        client = api_client(secret)
        client.raise_request_exception = False
        crawl = Crawl(TOKEN_HOLDER, label=f"{persona}'s token")
        for url in api_urls:
            crawl.visit(client, "get", url, _name_of(url))
        crawl.visit(client, "post", reverse("api:request_approve", args=[hostile.pending.pk]), "api:request_approve")
        problems += crawl.problems
    assert problems == [], "\n".join(problems[:60])
