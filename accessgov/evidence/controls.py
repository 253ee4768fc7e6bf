"""The control map: for each control, what it asks, which files answer it, and the tests computed
from those files. Pure data plus one function that fills in the results.

A test is either a population column (``<population>.<column>``: passed = rows with ``true``, total =
rows with ``true`` or ``false``; anyone can recount it, and the verifier does), or one of two tests
computed otherwise: ``ledger.chain_intact`` (every event of the extract re-hashed and linked) and
``reviews.recent_campaign`` (an access review closed within six months before the period's end).
The control texts are short paraphrases for orientation, not the standards' wording.
"""

from dataclasses import dataclass

LEDGER_FILE = "ledger/events.jsonl"
EXCEPTIONS_FILE = "populations/exceptions.csv"
ACTIVITY_FILE = "populations/activity.csv"
LEDGER_TEST = "ledger.chain_intact"
REVIEW_TEST = "reviews.recent_campaign"


@dataclass(frozen=True)
class Control:
    framework: str
    id: str
    title: str
    asks: str
    tests: tuple[str, ...]
    extra_files: tuple[str, ...] = ()


CONTROLS: list[Control] = [
    Control(
        "SOC 2",
        "CC6.1",
        "Logical access security",
        "Access to protected information assets is restricted to authorized users through logical access controls.",
        ("grants.approved_by_other", "grants.approvals_met", "approvals_mfa.fresh_mfa", LEDGER_TEST),
    ),
    Control(
        "SOC 2",
        "CC6.2",
        "Registration and authorization before access; removal when no longer authorized",
        "Users are registered and authorized before access is granted, and access is removed when it is no "
        "longer authorized.",
        ("requests.decided_by_other", "decisions.not_self", "deactivations.all_access_removed"),
    ),
    Control(
        "SOC 2",
        "CC6.3",
        "Access authorized, modified and removed by role, least privilege and segregation of duties",
        "Access is granted, changed and removed based on roles and responsibilities, with least privilege and "
        "segregation of duties.",
        (
            "grants.approved_by_other",
            "removals.confirmed_within_target",
            "review_items.answered",
            "review_items.reviewer_not_subject",
            "policy_changes.second_approver",
        ),
    ),
    Control(
        "SOC 2",
        "CC7.2",
        "Monitoring for anomalies",
        "System components are monitored for anomalies (unauthorized access, misuse) and the anomalies are evaluated.",
        (
            "drift_findings.closed",
            "break_glass.acknowledged_by_other",
            "break_glass.acknowledged_in_time",
            "break_glass.acknowledged_after_use",
            "activity_findings.signed_off",
            "activity_findings.signed_off_by_other",
            LEDGER_TEST,
        ),
        (EXCEPTIONS_FILE, ACTIVITY_FILE),
    ),
    Control(
        "ISO 27001",
        "A.5.15",
        "Access control",
        "Rules to control access are established and implemented; changes to them are controlled.",
        ("policy_changes.second_approver", "grants.approvals_met"),
    ),
    Control(
        "ISO 27001",
        "A.5.16",
        "Identity management",
        "The full life cycle of identities is managed: a leaver's access ends.",
        ("deactivations.all_access_removed",),
    ),
    Control(
        "ISO 27001",
        "A.5.18",
        "Access rights",
        "Access rights are provisioned, reviewed, modified and removed according to the access control rules.",
        ("grants.approved_by_other", "removals.confirmed_within_target", "review_items.answered"),
    ),
    Control(
        "ISO 27001",
        "A.8.2",
        "Privileged access rights",
        "The allocation and use of privileged access rights is restricted and managed.",
        (
            "approvals_mfa.fresh_mfa",
            "break_glass.acknowledged_by_other",
            "break_glass.acknowledged_in_time",
            "break_glass.acknowledged_after_use",
        ),
    ),
    Control(
        "ISO 27001",
        "A.8.15",
        "Logging",
        "Logs recording activities and events are produced, kept, protected and analysed.",
        (LEDGER_TEST, "activity.sealed", "activity_findings.signed_off"),
    ),
    Control(
        "PCI DSS",
        "7.2.4",
        "Review of user accounts and access privileges",
        "All user accounts and related access privileges are reviewed at least once every six months.",
        (REVIEW_TEST, "review_items.answered", "review_items.reviewer_not_subject"),
    ),
    Control(
        "PCI DSS",
        "8.4",
        "Multi-factor authentication",
        "MFA is implemented for access into the cardholder data environment (here: every sign-in, plus a fresh "
        "code for high-risk approvals and break-glass).",
        ("approvals_mfa.fresh_mfa",),
    ),
    Control(
        "PCI DSS",
        "10.2",
        "Audit logs",
        "Audit logs are implemented to support the detection of anomalies and the forensic analysis of events.",
        (LEDGER_TEST, "drift_findings.closed", "activity.sealed", "activity_findings.signed_off"),
        (EXCEPTIONS_FILE,),
    ),
]


def result_text(passed: int, total: int, not_counted: int = 0) -> str:
    """ "1,204 / 1,204 (100 %)"; with "; 3 rows not counted (empty cells)" when some rows of the period have no
    verdict yet (a follow-up still open, a review item unanswered, a removal whose target time has not passed) or
    none to have (access never applied); "no verdict yet: 2 rows not counted (empty cells)"; or "no items in the
    period"."""
    rows = f"{not_counted:,} row{'s' if not_counted != 1 else ''} not counted (empty cells: the column says why)"
    if total == 0:
        return f"no verdict yet: {rows}" if not_counted else "no items in the period"
    share = 100 * passed / total
    shown = f"{share:.1f}" if 99.95 > share > 0.05 and share != int(share) else f"{share:.0f}"
    return f"{passed:,} / {total:,} ({shown} %)" + (f"; {rows}" if not_counted else "")


def status(passed: int, total: int, not_counted: int = 0) -> str:
    """pass, exceptions, no_verdict_yet (rows in the period, none with a verdict yet) or not_applicable (none)."""
    if total == 0:
        return "no_verdict_yet" if not_counted else "not_applicable"
    return "pass" if passed == total else "exceptions"


def control_map(tests: dict[str, dict]) -> dict:
    """The control map document (controls/control_map.json): every control with its tests filled in from
    ``tests`` ({test id: {"description", "file", "column", "passed", "total"}})."""
    controls = []
    for control in CONTROLS:
        entries = []
        files: list[str] = []
        for test_id in control.tests:
            test = tests[test_id]
            entries.append(
                {
                    "id": test_id,
                    **test,
                    "result": result_text(test["passed"], test["total"], test.get("open", 0)),
                    "status": status(test["passed"], test["total"], test.get("open", 0)),
                    "exceptions": test["total"] - test["passed"],
                }
            )
            if test.get("file") and test["file"] not in files:
                files.append(test["file"])
        files += [f for f in control.extra_files if f not in files]
        if any(e["exceptions"] for e in entries) and EXCEPTIONS_FILE not in files:
            files.append(EXCEPTIONS_FILE)
        statuses = {e["status"] for e in entries}
        controls.append(
            {
                "framework": control.framework,
                "id": control.id,
                "title": control.title,
                "asks": control.asks,
                "files": files,
                "tests": entries,
                "status": next(
                    (name for name in ("exceptions", "pass", "no_verdict_yet") if name in statuses), "not_applicable"
                ),
            }
        )
    return {"controls": controls}
