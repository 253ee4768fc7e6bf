"""The ticket provider a role chose, whatever its kind: one interface (``issue_get``,
``webhook_signature_valid``, ``webhook_issue_key``), implemented by ``jira`` and ``github``."""

from types import ModuleType

from accessgov.integrations import github, jira
from accessgov.integrations.jira import Issue
from accessgov.models import TicketProvider

__all__ = ["Issue", "client_for", "issue_get", "reference_problem"]


def client_for(provider: TicketProvider) -> ModuleType:
    return github if provider.kind == TicketProvider.Kind.GITHUB else jira


def issue_get(provider: TicketProvider, key: str) -> Issue:
    """Read one ticket from ``provider`` (Raises ProviderError when it cannot answer)."""
    return client_for(provider).issue_get(provider, key)


def reference_problem(provider: TicketProvider, reference: str) -> str | None:
    """Why ``reference`` cannot name a ticket of ``provider`` (None: it can), said before asking it."""
    if provider.kind == TicketProvider.Kind.GITHUB and github.parse_reference(reference) is None:
        return f"Name the GitHub issue as {github.REFERENCE_HINT} (e.g. acme/payments#123)."
    return None
