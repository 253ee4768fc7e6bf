"""The provisioning world: a real PostgreSQL target (``target``/``pg`` fixtures), approving, making grants due, the webhook receiver."""

import base64
import json
import threading
import time
from collections import Counter
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connection
from django.utils import timezone

from accessgov.connectors.postgres import PostgresConnector
from accessgov.connectors.webhook import verify
from accessgov.models import AccessEvent, Grant, Role, System
from accessgov.services import access_requests as ar
from tests.support.pg_target import PgTarget

H = timedelta(hours=1)


JUSTIFICATION = "Investigating incident INC-42 on payments"


WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"accessgov-test-signing-key-0123456789").decode()


def approve(w, user=None) -> Grant:
    """Submit and approve a one-hour request for w.role (one approval) and return its grant."""
    access_request = ar.access_request_submit(user or w.requester, role=w.role, duration=H, justification=JUSTIFICATION)
    ar.access_request_approve(w.approver, access_request.pk, comment="ok")
    return Grant.objects.get(access_request=access_request)


def make_due(grant: Grant) -> None:
    """Setup only: the shortest policy duration is 5 minutes; make this grant's end a second ago."""
    now = timezone.now()
    Grant.objects.filter(pk=grant.pk).update(
        starts_at=now - timedelta(minutes=10), expires_at=now - timedelta(seconds=1)
    )


def event_types(grant: Grant) -> Counter:
    return Counter(AccessEvent.objects.filter(grant=grant).values_list("event_type", flat=True))


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def in_another_connection(call):
    """Run ``call`` in a thread with its own database connection: what it sees is committed."""
    result: dict = {}

    def run():
        try:
            result["value"] = call()
        except BaseException as exc:
            result["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    if "error" in result:
        raise result["error"]
    return result["value"]


@pytest.fixture
def target():
    """A fresh database, managed role, provisioner and table on the test server; dropped afterwards.
    (The service gate, an autouse fixture, has already skipped this test on SQLite.)"""
    settings = connection.settings_dict
    pg_target = PgTarget(
        host=settings.get("HOST") or "127.0.0.1",
        port=int(settings.get("PORT") or 5432),
        superuser=settings.get("USER") or "postgres",
        password=settings.get("PASSWORD") or "",
    )
    try:
        yield pg_target.create()
    finally:
        pg_target.drop()


@pytest.fixture
def pg(world, target):
    """The lifecycle world with "Payments DB" provisioned by the PostgreSQL connector into ``target``;
    the requester has a login role there."""
    config = target.connector_config()
    assert PostgresConnector.validate_config(config, target.password) == []
    System.objects.filter(pk=world.system.pk).update(
        connector=System.Connector.POSTGRES, connector_config=config, connector_secret=target.password
    )
    Role.objects.filter(pk=world.role.pk).update(target_name=target.managed)
    world.system.refresh_from_db()
    world.role.refresh_from_db()
    world.target = target
    world.principal = target.create_login(world.requester.username)
    return world


class Receiver:
    """A local webhook receiver: verifies each POST with the documented receiver check, records it,
    and answers ``status`` (with a Location header for redirects)."""

    def __init__(self, secret: str):
        self.secret = secret
        self.seen_ids: set[str] = set()
        self.deliveries: list[dict] = []
        self.other_hits: list[str] = []
        self.status = 200
        self.refuse_unverified = False  # answer 400 to a delivery verify() rejects, as a strict receiver would
        self.delay = 0.0  # seconds before answering (a slow target)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/hook":
                    receiver.other_hits.append(f"POST {self.path}")
                    return self._answer(200)
                headers = {key.lower(): value for key, value in self.headers.items()}
                verified = verify(receiver.secret, headers, body, seen=receiver.seen_ids)
                receiver.deliveries.append(
                    {"headers": headers, "body": body, "json": json.loads(body), "verified": verified}
                )
                time.sleep(receiver.delay)
                self._answer(400 if receiver.refuse_unverified and not verified else receiver.status)

            def do_GET(self):
                receiver.other_hits.append(f"GET {self.path}")
                self._answer(200)

            def _answer(self, status):
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="webhook-receiver", daemon=True
        )

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def receiver():
    with Receiver(WEBHOOK_SECRET) as r:
        yield r
