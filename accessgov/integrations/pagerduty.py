"""PagerDuty, through the official ``pagerduty`` client (REST API v2): is a person on call now for an
escalation policy at some level, and are they assigned to (or did they acknowledge) an open incident of
a service; is an incident resolved yet. Reads only; the base URL is the provider's setting (so tests
and EU accounts point elsewhere), checked by the address guard before every call.

Every question answers a ``Check``: ``ok`` with the evidence it relied on, or not ok with the reason a
person reads. Any failure to ask (network, 4xx/5xx, an answer we do not understand) is not ok: the
caller falls back to people."""

from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime

import httpx2
import pagerduty
from django.conf import settings
from django.utils.dateparse import parse_datetime

from accessgov import inputs, net
from accessgov.integrations.http import PinnedTransport, ProviderError, ensure_allowed_url, ssl_context
from accessgov.models import OnCallProvider

OPEN_STATUSES = ["triggered", "acknowledged"]
MAX_INCIDENTS = 100


@dataclass(frozen=True)
class Check:
    ok: bool
    reason: str
    evidence: dict = field(default_factory=dict)
    ends_at: datetime | None = None  # the shift's end (on-call), when it has one
    incident_id: str = ""  # the incident the grant is bound to


def client_for(provider: OnCallProvider) -> pagerduty.RestApiV2Client:
    """A client for ``provider`` that fails fast: one network attempt, one retry of a 429, short sleeps. It
    connects to the address the guard checked (DNS rebinding), and follows no redirect (the library's
    default). Use it inside a ``net.deadline`` (``_call``): its own timeout bounds each socket read only."""
    if problem := provider.base_url_problem():  # a provider saved before http:// was refused
        raise ProviderError(problem)
    address = ensure_allowed_url(provider.base_url)
    client = pagerduty.RestApiV2Client(
        provider.api_key, base_url=provider.base_url.rstrip("/"), transport=PinnedTransport(address, ssl_context())
    )
    client.timeout = settings.INTEGRATIONS_TIMEOUT_SECONDS
    client.max_network_attempts = 0
    client.max_http_attempts = 1
    client.retry = {429: 1}
    client.sleep_timer = 0.1
    return client


def _call(provider: OnCallProvider, action):
    """Run ``action`` (every request of one question: the user lookup, then its on-calls or incidents, all
    pages) within INTEGRATIONS_TIMEOUT_SECONDS in all; a provider that has not answered by then — silent, or
    trickling its answer — is a timeout: ProviderError "(TimeoutError)"."""
    try:
        with net.deadline(settings.INTEGRATIONS_TIMEOUT_SECONDS), closing(client_for(provider)) as client:
            return action(client)  # closed after: its pooled connection would stay open until collected
    except ProviderError:
        raise
    except TimeoutError:
        raise ProviderError(f"{provider.name} could not answer (TimeoutError).") from None
    except pagerduty.Error as error:
        if isinstance(error.__cause__, httpx2.TimeoutException):  # a socket read or connect timed out first
            raise ProviderError(f"{provider.name} could not answer (TimeoutError).") from None
        status = getattr(getattr(error, "response", None), "status_code", None)
        detail = f"HTTP {status}" if status else error.__class__.__name__
        raise ProviderError(f"{provider.name} could not answer ({detail}).") from None
    except (pagerduty.UrlError, ValueError, KeyError, TypeError) as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        detail = f"HTTP {status}" if status else error.__class__.__name__
        raise ProviderError(f"{provider.name} could not answer ({detail}).") from None


def _user_id(client: pagerduty.RestApiV2Client, email: str) -> str | None:
    for user in client.iter_all("users", params={"query": email}):
        if str(user.get("email", "")).lower() == email.lower():
            return str(user["id"])
    return None


def _priority_rank(name: str) -> int | None:
    """P1 → 1 … P5 → 5 (lower is more urgent); anything else is unknown."""
    name = (name or "").strip().upper()
    return int(name[1:]) if len(name) in (2, 3) and name[0] == "P" and inputs.ascii_digits(name[1:]) else None


def check_on_call(provider: OnCallProvider, *, email: str, escalation_policy: str, max_level: int | None) -> Check:
    """Is the person with ``email`` on call now for ``escalation_policy`` at ``max_level`` or lower?
    The evidence names the schedule, the level and the shift's end."""
    if not email:
        return Check(False, "Your account has no email address to match with PagerDuty.")

    def ask(client):
        user_id = _user_id(client, email)
        if user_id is None:
            return None, []
        params = {"user_ids[]": [user_id], "escalation_policy_ids[]": [escalation_policy], "time_zone": "UTC"}
        return user_id, list(client.iter_all("oncalls", params=params))

    user_id, oncalls = _call(provider, ask)
    if user_id is None:
        return Check(False, f"No PagerDuty user has the email {email}.")
    matching = []
    for oncall in oncalls:
        level = oncall.get("escalation_level")
        policy_id = str((oncall.get("escalation_policy") or {}).get("id", ""))
        user = str((oncall.get("user") or {}).get("id", ""))
        if policy_id != escalation_policy or user != user_id or not isinstance(level, int):
            continue
        if max_level is None or level <= max_level:
            matching.append(oncall)
    if not matching:
        level_text = f" at level {max_level} or lower" if max_level else ""
        return Check(False, f"You are not on call now for escalation policy {escalation_policy}{level_text}.")
    best = min(matching, key=lambda o: o["escalation_level"])
    ends = [parse_datetime(o["end"]) for o in matching if o.get("end")]
    # A permanent on-call (no end) is not capped; otherwise the latest matching shift end counts.
    ends_at = None if any(not o.get("end") for o in matching) else max(e for e in ends if e is not None)
    schedule = best.get("schedule") or {}
    evidence = {
        "provider": provider.name,
        "kind": "on_call",
        "pagerduty_user": user_id,
        "escalation_policy": escalation_policy,
        "level": best["escalation_level"],
        "schedule": schedule.get("id"),
        "schedule_name": schedule.get("summary"),
        "shift_start": best.get("start"),
        "shift_end": ends_at.isoformat() if ends_at else None,
    }
    return Check(True, f"On call (level {best['escalation_level']})", evidence, ends_at=ends_at)


def check_incident(provider: OnCallProvider, *, email: str, service: str, min_priority: str) -> Check:
    """Is the person with ``email`` assigned to, or an acknowledger of, an open incident of ``service``
    (of ``min_priority`` or more urgent, when set)? The evidence names the incident."""
    if not email:
        return Check(False, "Your account has no email address to match with PagerDuty.")
    wanted = _priority_rank(min_priority) if min_priority else None

    def ask(client):
        user_id = _user_id(client, email)
        if user_id is None:
            return None, []
        params = {"statuses[]": OPEN_STATUSES, "service_ids[]": [service], "time_zone": "UTC"}
        incidents = []
        for incident in client.iter_all("incidents", params=params):
            incidents.append(incident)
            if len(incidents) >= MAX_INCIDENTS:
                break
        return user_id, incidents

    user_id, incidents = _call(provider, ask)
    if user_id is None:
        return Check(False, f"No PagerDuty user has the email {email}.")
    for incident in incidents:
        if incident.get("status") not in OPEN_STATUSES:
            continue
        if str((incident.get("service") or {}).get("id", service)) != service:
            continue
        assignees = {str((a.get("assignee") or {}).get("id")) for a in incident.get("assignments") or []}
        acknowledgers = {str((a.get("acknowledger") or {}).get("id")) for a in incident.get("acknowledgements") or []}
        if user_id not in assignees | acknowledgers:
            continue
        priority = (incident.get("priority") or {}).get("name", "")
        rank = _priority_rank(priority)
        if wanted is not None and (rank is None or rank > wanted):
            continue
        evidence = {
            "provider": provider.name,
            "kind": "incident",
            "pagerduty_user": user_id,
            "service": service,
            "incident": str(incident["id"]),
            "incident_number": incident.get("incident_number"),
            "priority": priority or None,
            "status": incident.get("status"),
            "role_in_incident": "assigned" if user_id in assignees else "acknowledged",
            "url": incident.get("html_url"),
        }
        return Check(True, f"Responding to incident {incident['id']}", evidence, incident_id=str(incident["id"]))
    priority_text = f" of priority {min_priority} or higher" if min_priority else ""
    return Check(False, f"You are not assigned to an open incident{priority_text} of service {service}.")


def incident_status(provider: OnCallProvider, incident_id: str) -> str:
    """The incident's status (triggered, acknowledged, resolved); raises ProviderError."""
    incident = _call(provider, lambda client: client.rget(f"incidents/{incident_id}"))
    status = incident.get("status") if isinstance(incident, dict) else None
    if not isinstance(status, str):
        raise ProviderError(f"{provider.name} gave no status for incident {incident_id}.")
    return status
