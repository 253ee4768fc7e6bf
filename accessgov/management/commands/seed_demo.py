"""``manage.py seed_demo``: demo systems, roles and one user per persona (idempotent).

Prints how to sign in as each demo user: username, password, TOTP secret and otpauth URI. The
TOTP secret is random per database and kept across runs; run with ``--json`` for scripts.
"""

import json
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django_otp.plugins.otp_totp.models import TOTPDevice
from guardian.shortcuts import assign_perm

from accessgov import clock, otp, personas
from accessgov.models import AccessRequest, Eligibility, Grant, Role, System, User
from accessgov.services import access_requests as ar
from accessgov.services import grants, reviews
from accessgov.services.activity import activity_ingest_push

DEMO_PASSWORD = "demo-access-2026"  # noqa: S105 - printed demo credential, refused outside DEBUG

DEMO_USERS = [
    # username, first name, last name, groups, is_staff
    ("alice", "Alice", "Requester", [personas.REQUESTER], False),
    ("bob", "Bob", "Approver", [personas.REQUESTER, personas.APPROVER], False),
    ("carol", "Carol", "Approver", [personas.REQUESTER, personas.APPROVER], False),
    ("olivia", "Olivia", "Owner", [personas.REQUESTER, personas.SYSTEM_OWNER], False),
    ("audrey", "Audrey", "Auditor", [personas.AUDITOR], False),
    ("adam", "Adam", "Admin", [personas.PORTAL_ADMIN], True),
    # A second admin: four-eyed changes (a role's approvers, a service token) need another admin's approval.
    ("ada", "Ada", "Admin", [personas.PORTAL_ADMIN], True),
]

DEMO_SYSTEMS = [
    (
        "Payments DB",
        "payments-db",
        "PostgreSQL cluster behind the payments API.",
        [
            ("read-only", Role.RiskTier.LOW, 0, False, False),
            ("read-write", Role.RiskTier.HIGH, 1, True, True),
        ],
    ),
    (
        "Kubernetes prod",
        "k8s-prod",
        "The production Kubernetes cluster (eu-west).",
        [
            ("view", Role.RiskTier.LOW, 0, False, False),
            ("cluster-admin", Role.RiskTier.CRITICAL, 2, True, True),
        ],
    ),
    (
        "AWS prod account",
        "aws-prod",
        "The AWS account that runs production.",
        [
            ("ReadOnlyAccess", Role.RiskTier.MEDIUM, 1, False, False),
            ("AdministratorAccess", Role.RiskTier.CRITICAL, 2, True, True),
        ],
    ),
    (
        "Support admin",
        "support-admin",
        "Internal customer-support admin tool.",
        [
            ("impersonate-customer", Role.RiskTier.HIGH, 1, True, False),
        ],
    ),
]


# What each demo role is for: activity beyond it is a finding (issue 17).
DEMO_ACCESS_LEVELS = {
    "read-only": Role.AccessLevel.READ_ONLY,
    "read-write": Role.AccessLevel.READ_WRITE,
    "view": Role.AccessLevel.READ_ONLY,
    "cluster-admin": Role.AccessLevel.ADMIN,
    "ReadOnlyAccess": Role.AccessLevel.READ_ONLY,
    "AdministratorAccess": Role.AccessLevel.ADMIN,
    "impersonate-customer": Role.AccessLevel.READ_WRITE,
}


class Command(BaseCommand):
    help = "Create demo systems, roles and persona users (idempotent) and print how to sign in."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the sign-in details as JSON.")
        parser.add_argument(
            "--force", action="store_true", help="Allow seeding with DEBUG off (never on a real deployment)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG and not options["force"]:
            raise CommandError("seed_demo creates users with a known password; it runs only with DEBUG=1 (or --force).")
        with transaction.atomic():
            self._groups()
            users = self._users()
            self._systems(users)
        self._activity(users)
        details = [self._sign_in_details(users[name]) for name, *_ in DEMO_USERS]
        if options["json"]:
            url = settings.PORTAL_URL.rstrip("/") + "/"
            self.stdout.write(json.dumps({"url": url, "users": details}, indent=2))
            return
        self._print(details)

    def _groups(self) -> None:
        for name in personas.ALL:
            Group.objects.get_or_create(name=name)
        auditors = Group.objects.get(name=personas.AUDITOR)
        auditors.permissions.add(Permission.objects.get(codename="audit_access"))

    def _users(self) -> dict[str, User]:
        users = {}
        for username, first, last, groups, is_staff in DEMO_USERS:
            user, created = User.objects.get_or_create(
                username=username,
                defaults={
                    "first_name": first,
                    "last_name": last,
                    "email": f"{username}@example.com",
                    "is_staff": is_staff,
                    "is_superuser": is_staff,
                },
            )
            if created:
                user.set_password(DEMO_PASSWORD)
                user.save(update_fields=["password"])
            user.groups.add(*Group.objects.filter(name__in=groups))
            if not TOTPDevice.objects.filter(user=user, confirmed=True).exists():
                TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=True)
                otp.new_backup_codes(user)
            users[username] = user
        return users

    def _systems(self, users: dict[str, User]) -> None:
        engineers = Group.objects.get(name=personas.REQUESTER)
        for name, slug, description, roles in DEMO_SYSTEMS:
            system, _ = System.objects.get_or_create(slug=slug, defaults={"name": name, "description": description})
            assign_perm("accessgov.own_system", users["olivia"], system)
            assign_perm("accessgov.approve_system", users["carol"], system)
            if slug != "support-admin":
                assign_perm("accessgov.approve_system", users["bob"], system)
            else:  # a second approver, so that carol's own requests there have someone to decide them
                assign_perm("accessgov.approve_system", users["adam"], system)
            for role_name, risk, approvals, step_up, break_glass in roles:
                role, _ = Role.objects.get_or_create(
                    system=system,
                    name=role_name,
                    defaults={
                        "access_level": DEMO_ACCESS_LEVELS.get(role_name, ""),
                        "risk_tier": risk,
                        "approvals_required": approvals,
                        "step_up_required": step_up,
                        "break_glass_allowed": break_glass,
                        "default_duration": timedelta(hours=1),
                        "max_duration": timedelta(hours=8 if risk == Role.RiskTier.LOW else 4),
                        "ticket_required": risk == Role.RiskTier.CRITICAL,
                        "ticket_pattern": r"[A-Z]+-\d+" if risk == Role.RiskTier.CRITICAL else "",
                    },
                )
                if not Eligibility.objects.filter(role=role, group=engineers).exists():
                    Eligibility.objects.create(role=role, group=engineers, reason="Demo: every engineer")

    def _activity(self, users: dict[str, User]) -> None:
        """A little history through the real services, once: requests in every state."""
        if AccessRequest.objects.exists():
            return
        now = clock.now()
        role = {(r.system.slug, r.name): r for r in Role.objects.select_related("system")}
        why = "Investigating slow checkout queries, INC-2041"
        ar.access_request_submit(
            users["alice"], role=role["payments-db", "read-only"], duration=timedelta(hours=2), justification=why
        )
        pending = ar.access_request_submit(
            users["alice"],
            role=role["k8s-prod", "cluster-admin"],
            duration=timedelta(hours=1),
            ticket="OPS-311",
            justification="Roll back the ingress controller after the failed upgrade",
        )
        ar.access_request_approve(
            users["carol"], pending.pk, comment="Looks right; second approver please.", step_up_at=now
        )
        ar.access_request_submit(
            users["olivia"],
            role=role["aws-prod", "ReadOnlyAccess"],
            duration=timedelta(hours=1),
            justification="Quarterly cost review of the prod account",
        )
        ar.access_request_submit(
            users["carol"],
            role=role["payments-db", "read-write"],
            duration=timedelta(hours=3),
            justification="Backfill the refunds table (DATA-88)",
        )
        denied = ar.access_request_submit(
            users["carol"],
            role=role["support-admin", "impersonate-customer"],
            duration=timedelta(hours=1),
            justification="Reproduce customer 4411's bug",
        )
        ar.access_request_deny(
            users["adam"],
            denied.pk,
            comment="Use the support sandbox; impersonation needs a customer consent ticket.",
            step_up_at=now,
        )
        break_glass = grants.break_glass_activate(
            users["bob"],
            role=role["payments-db", "read-write"],
            duration=timedelta(minutes=45),
            justification="Payments API down, INC-2050: kill runaway migration",
            step_up_at=now,
        )
        self._activity_evidence(break_glass, role["payments-db", "read-only"], users)
        self._review(users, role, now)

    def _activity_evidence(self, break_glass, read_only_role: Role, users: dict[str, User]) -> None:
        """What was done under two demo grants, reported through the real ingest service (as a target's
        tooling or a log shipper would; the demo's Payments DB has no PostgreSQL target to sample: point its
        connector at one and enable capture to see the sampler and pgaudit work, docs/ACTIVITY.md)."""

        alice_grant = Grant.objects.filter(user=users["alice"], role=read_only_role).first()
        system = break_glass.role.system
        # The activity happened between the break-glass grant's start and now, in that order; the ledger's
        # times then run forward (the finding is raised after everything it is about).
        start, now = break_glass.starts_at, clock.now()

        def at(tenths: int) -> str:
            return (start + (now - start) * tenths / 10).isoformat()

        def statement(grant, seconds: int, text: str, session: str) -> dict:
            return {
                "type": "statement",
                "at": at(seconds),
                "grant_id": grant.pk,
                "statement": text,
                "session_id": session,
                "client_address": "10.20.0.15",
                "application": "psql (demo)",
                "database": "payments",
            }

        records = [
            {
                "type": "session",
                "at": at(2),
                "grant_id": break_glass.pk,
                "session_id": "demo-bg-1",
                "client_address": "10.20.0.15",
                "application": "psql (demo)",
                "database": "payments",
            },
            statement(
                break_glass, 3, "SELECT pid, state, query FROM pg_stat_activity WHERE state = 'active'", "demo-bg-1"
            ),
            statement(break_glass, 5, "SELECT pg_cancel_backend(48211)", "demo-bg-1"),
            statement(
                break_glass, 8, "UPDATE schema_migrations SET dirty = false WHERE version = 20260112", "demo-bg-1"
            ),
            statement(break_glass, 9, "ALTER TABLE refunds DROP COLUMN IF EXISTS migration_tmp", "demo-bg-1"),
        ]
        if alice_grant is not None:
            records += [
                {
                    "type": "session",
                    "at": at(4),
                    "grant_id": alice_grant.pk,
                    "session_id": "demo-ro-1",
                    "client_address": "10.20.0.31",
                    "application": "DBeaver (demo)",
                    "database": "payments",
                },
                statement(
                    alice_grant,
                    6,
                    "EXPLAIN ANALYZE SELECT * FROM checkout_sessions WHERE created_at > now() - interval '1 hour'",
                    "demo-ro-1",
                ),
                statement(alice_grant, 7, "SELECT count(*) FROM checkout_sessions WHERE status = 'stuck'", "demo-ro-1"),
            ]
        activity_ingest_push(system, records, message_id="demo-seed-1", via="seed_demo", now=now)

    def _review(self, users: dict[str, User], role: dict, now) -> None:
        """Personal eligibility (one ending soon) and an open access review with a few answers."""
        Eligibility.objects.create(
            role=role["payments-db", "read-write"], user=users["alice"], reason="Demo: payments on-call"
        )
        Eligibility.objects.create(
            role=role["k8s-prod", "cluster-admin"],
            user=users["bob"],
            ends_at=now + timedelta(days=5),
            reason="Demo: platform migration until the end of the month",
        )
        campaign = reviews.review_campaign_create(
            users["audrey"],
            name=f"Quarterly access review {now.year} Q{(now.month - 1) // 3 + 1} (demo)",
            systems=list(System.objects.filter(slug__in=["payments-db", "k8s-prod"])),
            due_at=now + timedelta(days=10),
        )
        mine = campaign.items.filter(reviewer=users["olivia"]).order_by("pk")
        for item in mine[:2]:
            reviews.review_item_decide(users["olivia"], item.pk, decision="keep")
        bob_item = mine.filter(subject_user=users["bob"]).first()
        if bob_item:
            reviews.review_item_decide(
                users["olivia"], bob_item.pk, decision="revoke", comment="Migration finished; no longer needed."
            )

    def _sign_in_details(self, user: User) -> dict[str, Any]:
        device = TOTPDevice.objects.get(user=user, confirmed=True)
        return {
            "username": user.username,
            "password": DEMO_PASSWORD,
            "personas": sorted(user.groups.values_list("name", flat=True)),
            "totp_secret": otp.base32_secret(device),
            "otpauth_uri": device.config_url,
        }

    def _print(self, details: list[dict[str, Any]]) -> None:
        out = self.stdout
        out.write(self.style.SUCCESS("AccessGov demo data is ready.") + "\n")
        url = settings.PORTAL_URL.rstrip("/") + "/"
        out.write(f"Sign in at {url} with a username and the password below, then a TOTP code.\n")
        out.write("Add the secret (or the otpauth URI) to an authenticator app, or compute a code with:\n")
        out.write("    oathtool --totp -b SECRET\n\n")
        out.write(f"  {'user':<8} {'password':<18} {'personas':<28} TOTP secret\n")
        for d in details:
            roles = ", ".join(d["personas"])
            out.write(f"  {d['username']:<8} {d['password']:<18} {roles:<28} {d['totp_secret']}\n")
        out.write("\notpauth URIs:\n")
        for d in details:
            out.write(f"  {d['otpauth_uri']}\n")
