"""Activity evidence, the write side (issue 17): capture at targets, ingest, attribution and findings,
sign-off, sealing into the ledger, retention, right-sizing proposals. The pure helpers and the read side
are in ``accessgov.activity``; the data model is documented in ``accessgov.models.activity``."""

from accessgov.services.activity.capture import (
    activity_capture_run,
    activity_ingest_file,
    activity_read_logs,
    activity_sample,
    capture_after_remove,
    capture_before_apply,
)
from accessgov.services.activity.findings import activity_finding_sign_off
from accessgov.services.activity.ingest import activity_ingest_push
from accessgov.services.activity.rightsizing import (
    right_sizing_propose_end_eligibility,
    right_sizing_propose_max_duration,
)
from accessgov.services.activity.seal import activity_purge, activity_seal_due
from accessgov.services.activity.store import StoreResult, activity_store

__all__ = [
    "StoreResult",
    "activity_capture_run",
    "activity_finding_sign_off",
    "activity_ingest_file",
    "activity_ingest_push",
    "activity_purge",
    "activity_read_logs",
    "activity_sample",
    "activity_seal_due",
    "activity_store",
    "capture_after_remove",
    "capture_before_apply",
    "right_sizing_propose_end_eligibility",
    "right_sizing_propose_max_duration",
]
