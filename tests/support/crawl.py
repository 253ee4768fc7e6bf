"""The URL crawl shared by the security tests: every portal URL, hostile pages per persona, the pages about
real objects, and what is checked on every response (security headers, inline scripts, raw markup)."""

import re
import uuid
from html.parser import HTMLParser

from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls.exceptions import NoReverseMatch

from tests.conftest import verify_session
from tests.support.security_world import IMG_TAG, SCRIPT

SAMPLE_VALUES = {
    "int": ["1"],
    "str": ["x", "accessgov", "auth"],
    "slug": ["x"],
    "path": ["x"],
    "uuid": [str(uuid.UUID(int=1))],
}


CONVERTER = re.compile(r"<(?:(?P<conv>\w+):)?(?P<name>\w+)>")


def _walk(patterns, prefix="", namespace=""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            ns = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern), ns)
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), f"{namespace}{entry.name}" if entry.name else None, entry


def _url_for(route: str, name: str | None, pattern: URLPattern) -> str | None:
    kwargs_names = list(pattern.pattern.regex.groupindex)
    if name is None:
        return "/" + route if "<" not in route and "(" not in route else None
    candidates = {}
    for match in CONVERTER.finditer(route):
        candidates[match["name"]] = SAMPLE_VALUES.get(match["conv"] or "str", ["x"])
    for kw in kwargs_names:
        candidates.setdefault(kw, SAMPLE_VALUES["str"])
    for attempt in range(3):
        kwargs = {k: v[min(attempt, len(v) - 1)] for k, v in candidates.items()}
        try:
            return reverse(name, kwargs=kwargs or None)
        except NoReverseMatch:
            continue
    return None


def all_urls() -> list[tuple[str, str | None]]:
    urls = []
    for route, name, pattern in _walk(get_resolver().url_patterns):
        url = _url_for(route, name, pattern)
        if url is not None:
            urls.append((url, name))
    return urls


URLS = all_urls()


class _Markup(HTMLParser):
    """Collects what a browser would run: script elements, on* attributes, javascript: URLs."""

    URL_ATTRIBUTES = frozenset({"href", "src", "action", "formaction", "xlink:href"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self._script: str | None = None

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"inline event handler {name}= on <{tag}>")
            if name in self.URL_ATTRIBUTES and re.sub(r"[\s\x00-\x1f]", "", value or "").lower().startswith(
                "javascript:"
            ):
                self.problems.append(f"javascript: URL in <{tag} {name}>")
        if tag == "script":
            inert = (values.get("type") or "").lower() in ("application/json", "application/ld+json")
            src = values.get("src") or ""
            same_origin_file = src.startswith("/") and not src.startswith("//")
            if not (inert or same_origin_file):
                self.problems.append(f"inline or foreign script <script {values}>")
            self._script = "" if not inert else None

    def handle_data(self, data):
        if self._script is not None:
            self._script += data

    def handle_endtag(self, tag):
        if tag == "script" and self._script is not None:
            if self._script.strip():
                self.problems.append(f"inline script body {self._script.strip()[:60]!r}")
            self._script = None


def inline_script_problems(html: str) -> list[str]:
    """Scripts must be files from this origin (or inert JSON data); no handlers, no javascript: URLs."""
    parser = _Markup()
    parser.feed(html)
    parser.close()
    return parser.problems


HSTS = "max-age=31536000; includeSubDomains; preload"


def hardening_problems(response, where: str) -> list[str]:
    """Everything wrong with one response's headers (and, for HTML, its scripts); empty when hardened.
    Requests are made over HTTPS (``secure=True``) so HSTS must be there too."""
    problems = []
    csp = response.get("Content-Security-Policy", "")
    for directive in ("default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'"):
        if directive not in csp:
            problems.append(f"{where}: CSP lacks {directive!r} ({csp!r})")
    if "unsafe-inline" in csp or "unsafe-eval" in csp:
        problems.append(f"{where}: CSP allows unsafe script ({csp!r})")
    expected = {
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Strict-Transport-Security": HSTS,
    }
    for header, value in expected.items():
        if response.get(header) != value:
            problems.append(f"{where}: {header} is {response.get(header)!r}, expected {value!r}")
    if "no-store" not in response.get("Cache-Control", ""):
        problems.append(f"{where}: Cache-Control is {response.get('Cache-Control')!r}, expected no-store")
    if response.get("Content-Type", "").startswith("text/html") and not response.streaming:
        problems += [f"{where}: {p}" for p in inline_script_problems(response.content.decode())]
    return problems


def raw_markup(text: str) -> list[str]:
    """Hostile payload fragments that would be markup if this text were HTML."""
    return [fragment for fragment in (SCRIPT, IMG_TAG) if fragment in text]


def persona_client(name: str, world, hostile) -> Client:
    """A client for a session persona: anonymous, password-only (world.requester without the OTP step), or
    a verified session of a world persona ("admin" is the hostile world's superuser)."""
    client = Client(raise_request_exception=False)
    if name == "anonymous":
        return client
    if name == "password-only":
        client.force_login(world.requester)
        return client
    user = hostile.admin if name == "admin" else getattr(world, name)
    return verify_session(client, user)


def real_object_urls(world, hostile) -> list[str]:
    """Pages (and API answers) about objects that exist, plus unknown ones: the resolver crawl uses sample
    ids, which are mostly 404."""
    return [
        reverse("request_detail", args=[hostile.pending.pk]),
        reverse("request_detail", args=[hostile.approved.pk]),
        reverse("request_detail", args=[hostile.denied.pk]),
        reverse("grant_detail", args=[hostile.approved.grant.pk]),
        reverse("grant_detail", args=[hostile.break_glass_grant_id]),
        reverse("system_detail", args=[world.system.slug]),
        reverse("review_detail", args=[hostile.campaign_id]),
        reverse("review_export", args=[hostile.campaign_id]),
        reverse("admin:accessgov_system_change", args=[world.system.pk]),
        reverse("admin:accessgov_role_change", args=[world.role.pk]),
        reverse("admin:accessgov_accessrequest_change", args=[hostile.pending.pk]),
        reverse("api:request_detail", args=[hostile.pending.pk]),
        reverse("api:grant_detail", args=[hostile.approved.grant.pk]),
        reverse("api:request_detail", args=[999999]),
        "/api/v1/no-such-thing/",
        "/no-such-page/",
        "/requests/999999/",
    ]


def pages_by_persona(world, hostile) -> dict[str, list[str]]:
    grant = hostile.approved.grant.pk
    return {
        "requester": [
            reverse("home"),
            reverse("my_requests"),
            reverse("request_detail", args=[hostile.pending.pk]),
            reverse("request_detail", args=[hostile.approved.pk]),
            reverse("request_detail", args=[hostile.revoked.pk]),
            reverse("my_access"),
            reverse("grants_list"),
            reverse("grant_detail", args=[grant]),
            reverse("grant_detail", args=[hostile.break_glass_grant_id]),
            reverse("request_new"),
            reverse("break_glass"),
        ],
        "approver": [
            reverse("home"),
            reverse("approvals"),
            reverse("request_detail", args=[hostile.pending.pk]),
            reverse("request_detail", args=[hostile.denied.pk]),
            reverse("grant_detail", args=[hostile.revoked.grant.pk]),
            reverse("grants_list"),
        ],
        "owner": [
            reverse("system_list"),
            reverse("system_detail", args=[world.system.slug]),
            reverse("reviews"),
            reverse("review_detail", args=[hostile.campaign_id]),
        ],
        "auditor": [
            reverse("audit_trail"),
            reverse("model_changes"),
            reverse("reports"),
            reverse("report_access"),
            reverse("report_approvals"),
            reverse("report_break_glass"),
            reverse("report_denied"),
            reverse("break_glass_follow_ups"),
            reverse("live_access"),
            reverse("reviews"),
            reverse("review_detail", args=[hostile.campaign_id]),
            reverse("provisioning"),
            reverse("grants_list"),
        ],
        "admin": [
            reverse("admin:accessgov_system_changelist"),
            reverse("admin:accessgov_system_change", args=[world.system.pk]),
            reverse("admin:accessgov_role_changelist"),
            reverse("admin:accessgov_role_change", args=[world.role.pk]),
            reverse("admin:accessgov_accessrequest_changelist"),
            reverse("admin:accessgov_accessrequest_change", args=[hostile.pending.pk]),
            reverse("admin:accessgov_eligibility_changelist"),
            reverse("admin:accessgov_user_changelist"),
            reverse("admin:accessgov_user_change", args=[world.requester.pk]),
            reverse("admin:accessgov_accessevent_changelist"),
        ],
    }
