"""Jira over its REST API (v2, basic auth with an API token): read one issue — does it exist, is it open,
its title, project, type and assignee — and verify the signed webhook Jira sends when an issue changes.

A webhook is only a hint that something changed: the state acted on is always read back from Jira's
API, so a replayed (even a correctly signed) webhook can do no more than trigger a re-check."""

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import quote

from accessgov.integrations.http import ProviderError, request_json
from accessgov.models import TicketProvider

ISSUE_KEY = re.compile(r"^[A-Z][A-Z0-9_]{0,30}-[1-9][0-9]{0,9}$")
DONE_CATEGORY = "done"


@dataclass(frozen=True)
class Issue:
    """What a ticket provider said about one ticket (Jira and GitHub Issues answer the same shape)."""

    key: str
    exists: bool
    title: str = ""
    url: str = ""
    status: str = ""
    is_open: bool = False
    project: str = ""
    issue_type: str = ""
    assignee_email: str = ""
    types: tuple[str, ...] = ()  # every type-like name (GitHub: all its labels); empty: issue_type alone
    assignee_logins: tuple[str, ...] = ()  # GitHub: the assignees' logins


def issue_get(provider: TicketProvider, key: str) -> Issue:
    """Read ``key`` from Jira. A missing or invisible issue answers ``exists=False``; a provider that
    cannot answer raises ProviderError (callers fail closed)."""
    key = key.strip().upper()
    if not ISSUE_KEY.fullmatch(key):
        return Issue(key=key, exists=False)
    token = base64.b64encode(f"{provider.username}:{provider.api_token}".encode()).decode()
    url = (
        f"{provider.base_url.rstrip('/')}/rest/api/2/issue/{quote(key)}"
        "?fields=summary,status,assignee,project,issuetype"
    )
    status, body = request_json("GET", url, headers={"Authorization": f"Basic {token}"}, provider=provider.name)
    if status == 404:
        return Issue(key=key, exists=False)
    if status != 200 or not isinstance(body, dict) or not isinstance(body.get("fields"), dict):
        raise ProviderError(f"{provider.name} could not answer for {key} (HTTP {status}).")
    fields = body["fields"]
    status_field = fields.get("status") or {}
    category = ((status_field.get("statusCategory") or {}).get("key") or "").lower()
    return Issue(
        key=str(body.get("key") or key),
        exists=True,
        title=str(fields.get("summary") or "")[:300],
        url=provider.issue_url(key),
        status=str(status_field.get("name") or ""),
        is_open=category != DONE_CATEGORY,
        project=str((fields.get("project") or {}).get("key") or ""),
        issue_type=str((fields.get("issuetype") or {}).get("name") or ""),
        assignee_email=str((fields.get("assignee") or {}).get("emailAddress") or ""),
    )


def webhook_signature_valid(secret: str, body: bytes, header: str) -> bool:
    """Jira's admin webhooks sign the raw body: ``X-Hub-Signature: sha256=<hex HMAC-SHA256>``."""
    if not secret or not header.startswith("sha256="):
        return False
    offered = header.removeprefix("sha256=").strip().lower()
    if not offered.isascii():
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, offered)


def webhook_issue_key(payload: object) -> str | None:
    """The issue a Jira webhook is about (``issue.key``), or None."""
    if not isinstance(payload, dict):
        return None
    issue = payload.get("issue")
    key = issue.get("key") if isinstance(issue, dict) else None
    return key.upper() if isinstance(key, str) and ISSUE_KEY.fullmatch(key.upper()) else None
