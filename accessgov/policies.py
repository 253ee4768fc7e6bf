"""Evaluation of a role's policy: duration bounds, tickets, approvals needed, auto-approval rules."""

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from typing import Any

import re2

from accessgov.exceptions import PolicyViolation
from accessgov.models import AutoApprovalRule, Role, User
from accessgov.models.catalog import MIN_REQUEST_DURATION

BREAK_GLASS_MAX_DURATION = timedelta(hours=1)
MAX_SCHEDULE_AHEAD = timedelta(days=30)
RISK_ORDER = [Role.RiskTier.LOW, Role.RiskTier.MEDIUM, Role.RiskTier.HIGH, Role.RiskTier.CRITICAL]


def format_duration(duration: timedelta) -> str:
    minutes = int(duration.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{minutes} min" if minutes else ""]
    return " ".join(p for p in parts if p) or "0 min"


def validate_duration(
    role: Role, duration: timedelta, *, ceiling: timedelta | None = None, ceiling_is: str = ""
) -> None:
    """``duration`` within the role's maximum and, when given, a ``ceiling`` below it; ``ceiling_is`` says what
    the ceiling is when it is the tighter limit (the refusal then names both, not the ceiling as the role's)."""
    limit = min(role.max_duration, ceiling) if ceiling else role.max_duration
    if duration <= timedelta(0):
        raise PolicyViolation("The duration must be longer than zero.")
    if duration < MIN_REQUEST_DURATION:
        raise PolicyViolation(f"The shortest duration is {int(MIN_REQUEST_DURATION.total_seconds() // 60)} minutes.")
    if duration > limit:
        if limit < role.max_duration and ceiling_is:
            raise PolicyViolation(
                f"{ceiling_is} at most {format_duration(limit)} ({role} allows {format_duration(role.max_duration)})."
            )
        raise PolicyViolation(f"{role} allows at most {format_duration(limit)}.")


def validate_ticket(role: Role, ticket: str) -> None:
    """The role's ticket rule. Patterns match ASCII only (``re.ASCII``): without it ``\\d`` also
    matches fullwidth and Arabic-Indic digits, so "OPS-" followed by any of those passed ``[A-Z]+-\\d+``
    while naming no ticket in any tracker."""
    ticket = ticket.strip()
    if role.ticket_required and not ticket:
        raise PolicyViolation(f"{role} requires a ticket reference.")
    if not ticket or not role.ticket_pattern:
        return
    pattern = _ticket_rule(role.ticket_pattern)
    if pattern is None:  # saved before rules were checked (see ticket_pattern_problem)
        raise PolicyViolation(f"The ticket rule of {role} cannot be read; ask a portal admin to fix it.")
    matches = pattern.fullmatch(ticket) is not None
    if not matches:
        example = ticket_example(role.ticket_pattern)
        like = f"like {example}" if example else f"like {role.ticket_pattern}"
        raise PolicyViolation(f"The ticket must look {like} (the ticket rule of {role}).")


# A ticket rule is a regular expression; people read an example. The common shapes of rules ("OPS-123",
# "INC0012345", "#42") are written out by this small sampler; anything it cannot sample shows the rule.
_SAMPLE_CLASS = {"A-Z": "OPS", "a-z": "ops", "0-9": "123", "\\d": "123", "A-Za-z": "Ops", "A-Z0-9": "OPS1"}
_TOKEN = re.compile(r"\\d|\[(?P<cls>[^\]]+)\]|\\(?P<esc>[-#./_ ])|(?P<lit>[-A-Za-z0-9#_/.: ])")
_QUANT = re.compile(r"\+|\*|\?|\{(?P<n>\d+)(?:,(?P<m>\d*))?\}")


def ticket_example(pattern: str) -> str | None:
    """An example ticket reference that ``pattern`` accepts (``[A-Z]+-\\d+`` gives "OPS-123"), or None
    when the rule is beyond the sampler; the example is checked against the rule."""
    body = pattern.removeprefix("^").removesuffix("$")
    out, pos = [], 0
    while pos < len(body):
        token = _TOKEN.match(body, pos)
        if token is None:
            return None
        pos = token.end()
        if token.group("cls") is not None:
            unit = _SAMPLE_CLASS.get(token.group("cls"))
            if unit is None:
                return None
        elif token.group("esc") is not None:
            unit = token.group("esc")
        elif token.group("lit") is not None:
            unit = token.group("lit")
        else:
            unit = "123"
        quant = _QUANT.match(body, pos)
        if quant:
            pos = quant.end()
            if quant.group(0) == "?":
                unit = ""
            elif quant.group("n") is not None:
                unit = (
                    (unit * int(quant.group("n")))[: int(quant.group("n"))]
                    if len(unit) > 1
                    else unit * int(quant.group("n"))
                )
        elif len(unit) > 1:
            unit = unit[0]
        out.append(unit)
    example = "".join(out)
    rule = _ticket_rule(pattern)
    return example if example and rule is not None and rule.fullmatch(example) else None


# Every reason or comment a person types (forms.ReasonForm, DecisionForm, reviews): it goes into the
# append-only ledger, so the rule is the services' too, not only the forms'.
MAX_REASON_LENGTH = 2000


def ensure_reason_length(text: str, what: str = "The reason") -> None:
    if len(text) > MAX_REASON_LENGTH:
        raise PolicyViolation(f"{what} can be at most {MAX_REASON_LENGTH:,} characters (it has {len(text):,}).")


def ticket_pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot be a ticket rule (checked when a role is saved in the admin), or None."""
    try:
        re.compile(pattern, re.ASCII)
    except re.error as exc:
        return f"This is not a regular expression: {exc}."
    if _ticket_rule(pattern) is None:
        return (
            "Ticket rules are matched by RE2, in time linear in the ticket: back-references and look-arounds "
            "are not available. Write the rule without them."
        )
    return None


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


@lru_cache(maxsize=256)
def _ticket_rule(pattern: str) -> Any:
    """``pattern`` compiled by RE2 (linear-time matching: no rule an admin writes, such as ``(a+)+$``, makes
    a request backtrack for seconds), or None when RE2 cannot read it. RE2's ``\\d``, ``\\w`` and ``\\s`` are
    ASCII, as ``re.ASCII`` made them before."""
    try:
        return re2.compile(pattern, options=_RE2_OPTIONS)
    except re2.error:
        return None


def validate_start(starts_at: datetime | None, now: datetime) -> None:
    if starts_at is None:
        return
    if starts_at < now - timedelta(minutes=1):
        raise PolicyViolation("A scheduled start cannot be in the past.")
    if starts_at > now + MAX_SCHEDULE_AHEAD:
        raise PolicyViolation("A scheduled start can be at most 30 days ahead.")


def approvals_required(role: Role) -> int:
    return role.approvals_required


def _in_window(now: datetime, start: time, end: time) -> bool:
    current = now.astimezone(UTC).time()
    if start <= end:
        return start <= current < end
    return current >= start or current < end  # overnight window


def _rule_matches(rule: AutoApprovalRule, role: Role, requester: User, now: datetime) -> bool:
    if rule.requester_group_id and not requester.groups.filter(pk=rule.requester_group_id).exists():
        return False
    if (
        rule.window_start is not None
        and rule.window_end is not None
        and not _in_window(now, rule.window_start, rule.window_end)
    ):
        return False
    return not rule.max_risk_tier or RISK_ORDER.index(Role.RiskTier(role.risk_tier)) <= RISK_ORDER.index(
        Role.RiskTier(rule.max_risk_tier)
    )


def rule_static_match(rule: AutoApprovalRule, role: Role, requester: User, now: datetime) -> bool:
    """The rule's own conditions (group, UTC window, risk ceiling) hold: only then is a provider asked."""
    return _rule_matches(rule, role, requester, now)


def rule_needs_provider(rule: AutoApprovalRule) -> bool:
    """Whether the rule asks the on-call provider (on call now / responding to an incident)."""
    return bool(rule.oncall_escalation_policy or rule.incident_service)


@dataclass(frozen=True)
class AutoApproval:
    """The outcome of the auto-approval rules for one request: the reason it is approved without a
    person (None: it goes to people), the provider evidence relied on, when the grant must end at the
    latest (the on-call shift's end), the incident it is bound to, and notes for people on why rules
    that ask a provider did not match (not on call, a provider outage)."""

    reason: str | None
    evidence: dict = field(default_factory=dict)
    ends_at: datetime | None = None
    incident_id: str = ""
    incident_provider_id: int | None = None
    notes: list[str] = field(default_factory=list)


def auto_approval_decision(
    role: Role, requester: User, now: datetime, *, provider_checks: dict[int, list[Any]] | None = None
) -> AutoApproval:
    """Evaluate the role's rules. ``provider_checks`` maps a rule id to the provider's answers for its
    on-call/incident conditions (``integrations.pagerduty.Check``), asked before the transaction; a rule
    that needs a provider and has no (or a failed) answer does not match, and says why."""
    if role.approvals_required == 0:
        return AutoApproval("no approvals required")
    notes: list[str] = []
    for rule in role.auto_approval_rules.all():
        if not _rule_matches(rule, role, requester, now):
            continue
        if not rule_needs_provider(rule):
            return AutoApproval(f"rule: {rule.name}", notes=notes)
        checks = (provider_checks or {}).get(rule.pk)
        if not checks:
            notes.append(f"Rule {rule.name}: the on-call provider was not asked (new requests starting now only).")
            continue
        failed = [check for check in checks if not check.ok]
        if failed:
            notes.append(f"Rule {rule.name}: {'; '.join(check.reason for check in failed)}")
            continue
        ends = [check.ends_at for check in checks if check.ends_at is not None]
        incident = next((check for check in checks if check.incident_id), None)
        evidence = {"rule": rule.name, "rule_id": rule.pk, "checks": [check.evidence for check in checks]}
        return AutoApproval(
            f"rule: {rule.name}",
            evidence=evidence,
            ends_at=min(ends) if ends else None,
            incident_id=incident.incident_id if incident else "",
            incident_provider_id=rule.oncall_provider_id if incident else None,
            notes=notes,
        )
    return AutoApproval(None, notes=notes)


def auto_approval(role: Role, requester: User, now: datetime) -> str | None:
    """The reason a request is approved without a person, or None: "no approvals required" when
    N = 0, else the name of the first matching auto-approval rule (rules that ask a provider need its
    answers: ``auto_approval_decision``)."""
    return auto_approval_decision(role, requester, now).reason
