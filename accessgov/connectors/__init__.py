"""How access is applied to and removed from a target: one module per connector.

A connector is stateless; it receives the grant (with its role, system and user) and talks to the
target. Every operation is idempotent (applying twice grants once; removing what is gone is fine),
so an outbox item processed twice has one effect. Errors raise ConnectorError with a message that
never contains the secret.
"""

from accessgov.connectors.base import Connector, ConnectorError, Target, TargetBusy
from accessgov.connectors.manual import ManualConnector
from accessgov.connectors.postgres import PostgresConnector
from accessgov.connectors.webhook import WebhookConnector
from accessgov.models import System


def connector_for(system: System) -> Connector:
    classes: dict[str, type[Connector]] = {
        System.Connector.MANUAL: ManualConnector,
        System.Connector.WEBHOOK: WebhookConnector,
        System.Connector.POSTGRES: PostgresConnector,
    }
    return classes[system.connector](system.connector_config or {}, system.connector_secret)


__all__ = ["Connector", "ConnectorError", "Target", "TargetBusy", "connector_for"]
