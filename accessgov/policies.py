"""Evaluation of a role's policy: duration bounds, tickets, approvals needed, auto-approval rules."""

import re
from datetime import UTC, datetime, time, timedelta

from accessgov.exceptions import PolicyViolation
from accessgov.models import AutoApprovalRule, Role, User

BREAK_GLASS_MAX_DURATION = timedelta(hours=1)
MAX_SCHEDULE_AHEAD = timedelta(days=30)
RISK_ORDER = [Role.RiskTier.LOW, Role.RiskTier.MEDIUM, Role.RiskTier.HIGH, Role.RiskTier.CRITICAL]


def format_duration(duration: timedelta) -> str:
    minutes = int(duration.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{minutes} min" if minutes else ""]
    return " ".join(p for p in parts if p) or "0 min"


def validate_duration(role: Role, duration: timedelta, *, ceiling: timedelta | None = None) -> None:
    limit = min(role.max_duration, ceiling) if ceiling else role.max_duration
    if duration <= timedelta(0):
        raise PolicyViolation("The duration must be longer than zero.")
    if duration < timedelta(minutes=5):
        raise PolicyViolation("The shortest duration is 5 minutes.")
    if duration > limit:
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
    try:
        matches = re.fullmatch(role.ticket_pattern, ticket, re.ASCII) is not None
    except re.error as exc:  # saved before patterns were checked (see ticket_pattern_problem)
        raise PolicyViolation(f"The ticket rule of {role} cannot be read; ask a portal admin to fix it.") from exc
    if not matches:
        raise PolicyViolation(f"The ticket must look like {role.ticket_pattern} (for example a Jira key).")


def ticket_pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot be a ticket rule (checked when a role is saved in the admin), or None."""
    try:
        re.compile(pattern, re.ASCII)
    except re.error as exc:
        return f"This is not a regular expression: {exc}."
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
    if rule.window_start is not None and not _in_window(now, rule.window_start, rule.window_end):
        return False
    return not rule.max_risk_tier or RISK_ORDER.index(role.risk_tier) <= RISK_ORDER.index(rule.max_risk_tier)


def auto_approval(role: Role, requester: User, now: datetime) -> str | None:
    """The reason a request is approved without a person, or None: "no approvals required" when
    N = 0, else the name of the first matching auto-approval rule."""
    if role.approvals_required == 0:
        return "no approvals required"
    for rule in role.auto_approval_rules.all():
        if _rule_matches(rule, role, requester, now):
            return f"rule: {rule.name}"
    return None
