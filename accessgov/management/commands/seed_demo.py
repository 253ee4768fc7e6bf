"""``manage.py seed_demo``: demo systems, roles and one user per persona (idempotent).

Prints how to sign in as each demo user: username, password, TOTP secret and otpauth URI. The
TOTP secret is random per database and kept across runs; run with ``--json`` for scripts.
"""

import json
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django_otp.plugins.otp_totp.models import TOTPDevice

from accessgov import otp, personas
from accessgov.models import Role, System, User

DEMO_PASSWORD = "demo-access-2026"  # noqa: S105 - printed demo credential, refused outside DEBUG

DEMO_USERS = [
    # username, first name, last name, groups, is_staff
    ("alice", "Alice", "Requester", [personas.REQUESTER], False),
    ("bob", "Bob", "Approver", [personas.REQUESTER, personas.APPROVER], False),
    ("carol", "Carol", "Approver", [personas.REQUESTER, personas.APPROVER], False),
    ("olivia", "Olivia", "Owner", [personas.REQUESTER, personas.SYSTEM_OWNER], False),
    ("audrey", "Audrey", "Auditor", [personas.AUDITOR], False),
    ("adam", "Adam", "Admin", [personas.PORTAL_ADMIN], True),
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
            self._systems(owner=users["olivia"])
        details = [self._sign_in_details(users[name]) for name, *_ in DEMO_USERS]
        if options["json"]:
            self.stdout.write(json.dumps({"url": "http://127.0.0.1:8000/", "users": details}, indent=2))
            return
        self._print(details)

    def _groups(self) -> None:
        for name in personas.ALL:
            Group.objects.get_or_create(name=name)

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

    def _systems(self, owner: User) -> None:
        for name, slug, description, roles in DEMO_SYSTEMS:
            system, _ = System.objects.get_or_create(slug=slug, defaults={"name": name, "description": description})
            system.owners.add(owner)
            for role_name, risk, approvals, step_up, break_glass in roles:
                Role.objects.get_or_create(
                    system=system,
                    name=role_name,
                    defaults={
                        "risk_tier": risk,
                        "approvals_required": approvals,
                        "step_up_required": step_up,
                        "break_glass_allowed": break_glass,
                        "default_duration": timedelta(hours=1),
                        "max_duration": timedelta(hours=8 if risk == Role.RiskTier.LOW else 4),
                    },
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
        out.write("Sign in at http://127.0.0.1:8000/ with a username and the password below, then a TOTP code.\n")
        out.write("Add the secret (or the otpauth URI) to an authenticator app, or compute a code with:\n")
        out.write("    oathtool --totp -b SECRET\n\n")
        out.write(f"  {'user':<8} {'password':<18} {'personas':<28} TOTP secret\n")
        for d in details:
            roles = ", ".join(d["personas"])
            out.write(f"  {d['username']:<8} {d['password']:<18} {roles:<28} {d['totp_secret']}\n")
        out.write("\notpauth URIs:\n")
        for d in details:
            out.write(f"  {d['otpauth_uri']}\n")
