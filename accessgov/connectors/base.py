"""The connector interface."""

from dataclasses import dataclass
from typing import Any


class ConnectorError(Exception):
    """The target refused or could not be reached. ``str()`` is safe to store and show."""


class TargetBusy(ConnectorError):
    """The target held a lock (or ran a statement) past the time allowed: it is fine, only busy."""


@dataclass(frozen=True)
class Target:
    """What one grant means at the target: a principal (who) gets a target role (what)."""

    grant_id: int
    principal: str
    target_role: str
    username: str
    role_label: str
    expires_at: str
    operation_id: str = ""


class Connector:
    """apply / remove / verify, and where the target allows it, ending open sessions and listing
    current members (for reconciliation)."""

    automatic = True
    secret_required = False
    # True when is_applied() really reads the target back; otherwise a 2xx acknowledgement is the proof.
    reads_back = False
    # True when remove_many() does many removals in fewer round trips than one remove() each.
    removes_in_bulk = False

    def __init__(self, config: dict[str, Any], secret: str = "") -> None:
        self.config = config
        self.secret = secret

    @classmethod
    def validate_config(cls, config: dict[str, Any], secret: str) -> list[str]:
        """Problems with the configuration, as sentences for the admin form (empty when fine)."""
        return []

    def close(self) -> None:
        """Release connections kept between calls (called when a drain or reconciliation ends)."""

    def principal_for(self, username: str) -> str:
        template = self.config.get("principal_template", "{username}")
        return template.format(username=username)

    def apply(self, target: Target) -> None:
        raise NotImplementedError

    def remove(self, target: Target) -> None:
        raise NotImplementedError

    def is_applied(self, target: Target) -> bool:
        """Read back from the target; connectors that cannot read back trust the acknowledgement."""
        return True

    def remove_many(self, targets: list[Target], *, patient: bool = True) -> None:
        """Remove all of ``targets`` (idempotent, like ``remove``); raises if any removal failed.
        ``patient=False``: a connector that can bounds its waits for locks at the target much shorter
        (TargetBusy sooner), so that one blocked member does not hold back the others."""
        for target in targets:
            self.remove(target)

    def applied_among(self, targets: list[Target]) -> set[Target]:
        """Those of ``targets`` the target still shows (read back, like ``is_applied``)."""
        return {target for target in targets if self.is_applied(target)}

    def members(self, target_role: str) -> set[str] | None:
        """Principals holding ``target_role`` at the target, or None when the target cannot tell."""
        return None

    def remove_principal(self, principal: str, target_role: str) -> None:
        """Remove drift (access granted outside AccessGov)."""
        raise ConnectorError("This connector cannot remove access it did not grant.")
