"""Manual connector: a person with the right permission applies and removes access and marks it
done on the provisioning task list; overdue tasks are shown and notified."""

from accessgov.connectors.base import Connector


class ManualConnector(Connector):
    automatic = False
