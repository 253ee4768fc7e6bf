"""The ledger: the append-only, hash-chained access events (``AccessEvent``) and everything that touches
them as a chain. One module per concern:

- ``hashing``: what an event's hash covers and how it is computed (the canonical JSON); pure, no database.
- ``record``: appending events to the chain under the ledger lock (one event, or many with COPY).
- ``verify``: walking the chain and naming the first broken link.
- ``purge``: removing a prefix of the chain older than the retention period, leaving a checkpoint.
- ``export``: the SQL behind the audit trail's CSV export on PostgreSQL.

Services call it (``services/events.py`` records, ``services/audit.py`` verifies and purges); the
management commands and the audit views are thin callers of those services. Nothing here imports a view;
``export`` uses the CSV module's SQL cell formatting (``accessgov/exports.py``), the rest only models.
"""
