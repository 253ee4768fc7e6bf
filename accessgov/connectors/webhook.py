"""Webhook connector: a signed POST per change, following the Standard Webhooks scheme.

Headers: ``webhook-id`` (the outbox idempotency key: the same change always has the same id, so a
receiver can de-duplicate), ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, keyed with the secret, which is
``whsec_<base64>`` or raw text). A 2xx answer means the receiver applied or removed the access.
Timeouts are short, redirects are not followed, and the outbound guard (accessgov.net) refuses plain
http and loopback/private/link-local/reserved addresses unless WEBHOOK_ALLOW_PRIVATE_TARGETS is set,
at saving and at sending time. Retries: the outbox, with backoff.
"""

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from accessgov import net
from accessgov.connectors.base import Connector, ConnectorError, Target

TIMEOUT_SECONDS = 5
TOLERANCE_SECONDS = 300


def _key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(_key(secret), f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    secret: str, headers: dict[str, str], body: bytes, *, now: float | None = None, seen: set[str] | None = None
) -> bool:
    """Receiver-side check (also in docs/CONNECTORS.md): the signature, a fresh timestamp, and no
    replay. A replay is the same delivery sent again (same id AND timestamp); a retry by AccessGov
    keeps the id but is signed anew with a new timestamp, so it passes — the receiver then uses the
    id to de-duplicate work it already did (answer 2xx without doing it twice)."""
    message_id = headers.get("webhook-id", "")
    try:
        timestamp = int(headers.get("webhook-timestamp", ""))
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - timestamp) > TOLERANCE_SECONDS:
        return False
    delivery = f"{message_id}.{timestamp}"
    if seen is not None and delivery in seen:
        return False
    expected = sign(secret, message_id, timestamp, body)
    offered = headers.get("webhook-signature", "").split()
    if not any(hmac.compare_digest(expected, candidate) for candidate in offered):
        return False
    if seen is not None:
        seen.add(delivery)
    return True


def ensure_public_target(url: str) -> None:
    """Refuse a URL the outbound guard refuses (accessgov.net: https, public addresses only, unless
    WEBHOOK_ALLOW_PRIVATE_TARGETS), as a ConnectorError naming every reason."""
    if problems := net.target_problems(url):
        raise ConnectorError(" ".join(problems))


def post_signed(url: str, secret: str, message_id: str, body: bytes) -> int:
    """POST ``body`` (JSON) to ``url`` with the Standard Webhooks headers, signed now, and return the
    HTTP status of the answer (a redirect is returned as its 3xx status, never followed). Raises
    ConnectorError when the target is refused by the outbound guard (checked at sending time, on the
    addresses the connection then goes to) or cannot be reached in TIMEOUT_SECONDS. Used by this
    connector and by the outbound event webhooks."""
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "AccessGov-Webhooks/1",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }
    try:
        return net.post(url, body, headers, timeout=TIMEOUT_SECONDS)
    except net.TargetRefused as exc:
        raise ConnectorError(str(exc)) from None
    except net.TargetUnreachable as exc:
        raise ConnectorError(f"The webhook could not be reached ({exc}).") from None


class WebhookConnector(Connector):
    secret_required = True

    @classmethod
    def validate_config(cls, config: dict[str, Any], secret: str) -> list[str]:
        problems = []
        url = config.get("url", "")
        if not url:
            problems.append("'url' is required.")
        else:
            try:
                ensure_public_target(url)
            except ConnectorError as exc:
                problems.append(str(exc))
        if not secret:
            problems.append("A signing secret is required.")
        unknown = set(config) - {"url", "principal_template"}
        if unknown:
            problems.append(f"Unknown settings: {', '.join(sorted(unknown))}.")
        return problems

    def _post(self, event_type: str, target: Target, message_id: str) -> None:
        body = json.dumps(
            {
                "type": event_type,
                "grant_id": target.grant_id,
                "principal": target.principal,
                "username": target.username,
                "target_role": target.target_role,
                "role": target.role_label,
                "expires_at": target.expires_at,
            },
            sort_keys=True,
        ).encode()
        status = post_signed(self.config.get("url", ""), self.secret, message_id, body)
        if not 200 <= status < 300:
            raise ConnectorError(f"The webhook answered {status}.")

    def apply(self, target: Target) -> None:
        self._post("access.apply", target, target.operation_id or f"grant-{target.grant_id}-apply")

    def remove(self, target: Target) -> None:
        self._post("access.remove", target, target.operation_id or f"grant-{target.grant_id}-remove")
