"""GitHub Issues over its REST API: read one issue — does it exist, is it open, its title, repository,
labels (the "type") and assignees — and verify the signed ``issues`` webhook GitHub sends when it changes.
The same interface as ``integrations.jira`` (``issue_get``, ``webhook_signature_valid``,
``webhook_issue_key``), chosen per provider by ``integrations.tickets``.

References are ``owner/repo#123``. Calls: ``GET {base_url}/repos/{owner}/{repo}/issues/{number}`` with
``Authorization: Bearer <token>`` (a fine-grained token with Issues: read), ``Accept:
application/vnd.github+json`` and ``X-GitHub-Api-Version: 2022-11-28``. ``base_url`` is
https://api.github.com, or ``https://<host>/api/v3`` for GitHub Enterprise Server.

As with Jira, a webhook is only a hint: the state acted on is read back from the API, so a replayed (even
a correctly signed) delivery can do no more than trigger a re-check."""

import hashlib
import hmac
import re
from urllib.parse import quote

from accessgov.integrations.http import ProviderError, request_json
from accessgov.integrations.jira import Issue
from accessgov.models import TicketProvider

# GitHub's own limits: owner 1-39 characters (letters, digits, single hyphens), repository up to 100
# (letters, digits, ".", "-", "_"; never "." or ".."), issue numbers are positive integers.
ISSUE_REF = re.compile(
    r"^(?P<owner>[A-Za-z0-9](?:[A-Za-z0-9-]{0,38}))/(?P<repo>[A-Za-z0-9._-]{1,100})#(?P<number>[1-9][0-9]{0,9})$"
)
REFERENCE_HINT = "owner/repo#123"
API_HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}


def parse_reference(reference: str) -> tuple[str, str, int] | None:
    """(owner, repo, number) of ``owner/repo#123``, or None when it is not one."""
    match = ISSUE_REF.fullmatch(reference.strip())
    if match is None or match["repo"] in (".", ".."):
        return None
    return match["owner"], match["repo"], int(match["number"])


def canonical(owner: str, repo: str, number: int) -> str:
    return f"{owner}/{repo}#{number}"


def issue_get(provider: TicketProvider, key: str) -> Issue:
    """Read ``owner/repo#number`` from GitHub. A malformed reference, a missing or invisible issue (GitHub
    answers 404 for both, and for a repository the token cannot see) or a pull request answers
    ``exists=False``; a provider that cannot answer raises ProviderError (callers fail closed)."""
    key = key.strip()
    parsed = parse_reference(key)
    if parsed is None:
        return Issue(key=key, exists=False)
    owner, repo, number = parsed
    url = f"{provider.base_url.rstrip('/')}/repos/{quote(owner, safe='')}/{quote(repo, safe='')}/issues/{number}"
    headers = {**API_HEADERS, "Authorization": f"Bearer {provider.api_token}"}
    status, body = request_json("GET", url, headers=headers, provider=provider.name)
    if status in (404, 410):  # 410: the issue was deleted or issues are off in the repository
        return Issue(key=key, exists=False)
    if status != 200 or not isinstance(body, dict) or not isinstance(body.get("number"), int):
        raise ProviderError(f"{provider.name} could not answer for {key} (HTTP {status}).")
    if "pull_request" in body:  # the issues endpoint also answers for pull requests
        return Issue(key=key, exists=False, title="", status="pull request")
    state = str(body.get("state") or "")
    reason = str(body.get("state_reason") or "")
    labels = tuple(
        str(label.get("name") if isinstance(label, dict) else label)[:100]
        for label in (body.get("labels") or [])
        if isinstance(label, dict | str)
    )
    assignees = tuple(
        str(person.get("login") or "")
        for person in (body.get("assignees") or [])
        if isinstance(person, dict) and person.get("login")
    )
    html_url = str(body.get("html_url") or "")
    return Issue(
        key=canonical(owner, repo, number),
        exists=True,
        title=str(body.get("title") or "")[:300],
        url=html_url if html_url.startswith("https://") else "",
        status=f"{state} ({reason})" if reason and state == "closed" else state,
        is_open=state == "open",
        project=f"{owner}/{repo}",
        issue_type=labels[0] if labels else "",
        types=labels,
        assignee_logins=assignees,
    )


def webhook_signature_valid(secret: str, body: bytes, header: str) -> bool:
    """GitHub signs the raw body: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256>`` with the webhook's
    secret (the older SHA-1 ``X-Hub-Signature`` is not accepted)."""
    if not secret or not header.startswith("sha256="):
        return False
    offered = header.removeprefix("sha256=").strip().lower()
    if not offered.isascii() or len(offered) != 64:
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, offered)


def webhook_issue_key(payload: object) -> str | None:
    """The issue an ``issues`` delivery is about (``repository.full_name`` + ``issue.number``), or None
    (another shape, a pull request, a name GitHub would not make)."""
    if not isinstance(payload, dict):
        return None
    issue, repository = payload.get("issue"), payload.get("repository")
    if not isinstance(issue, dict) or not isinstance(repository, dict) or "pull_request" in issue:
        return None
    number, full_name = issue.get("number"), repository.get("full_name")
    if not isinstance(number, int) or isinstance(number, bool) or not isinstance(full_name, str):
        return None
    parsed = parse_reference(f"{full_name}#{number}")
    return canonical(*parsed) if parsed else None
