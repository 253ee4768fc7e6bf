"""Webhook connector: a signed POST per change, following the Standard Webhooks scheme.

Headers: ``webhook-id`` (the outbox idempotency key: the same change always has the same id, so a
receiver can de-duplicate), ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, keyed with the secret, which is
``whsec_<base64>`` or raw text). A 2xx answer means the receiver applied or removed the access.
Timeouts are short, redirects are not followed, and targets on loopback/private/link-local/reserved
addresses are refused unless WEBHOOK_ALLOW_PRIVATE_TARGETS is set. Retries: the outbox, with backoff.
"""

import base64
import hashlib
import hmac
import ipaddress
import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

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


def ensure_public_target(url: str, *, allow_private: bool | None = None, setting: str = "") -> None:
    """Refuse URLs whose host resolves to an internal address (SSRF guard), unless allowed
    (``allow_private``; by default WEBHOOK_ALLOW_PRIVATE_TARGETS). Integrations pass their own operator
    setting (``setting`` names it in the message)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConnectorError("The webhook URL must be an http(s) URL with a host.")
    if settings.WEBHOOK_ALLOW_PRIVATE_TARGETS if allow_private is None else allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except socket.gaierror:
        raise ConnectorError(f"Cannot resolve {parts.hostname}.") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global or address.is_multicast:
            raise ConnectorError(
                f"{parts.hostname} resolves to an internal address ({address}); an operator must allow "
                f"internal targets ({setting or 'WEBHOOK_ALLOW_PRIVATE_TARGETS'})."
            )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def post_signed(url: str, secret: str, message_id: str, body: bytes) -> int:
    """POST ``body`` (JSON) to ``url`` with the Standard Webhooks headers, signed now, and return the
    HTTP status of the answer (a redirect is returned as its 3xx status, never followed). Raises
    ConnectorError when the target is refused by the address guard or cannot be reached in
    TIMEOUT_SECONDS. Used by this connector and by the outbound event webhooks."""
    ensure_public_target(url)
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "AccessGov-Webhooks/1",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - checked above
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=TIMEOUT_SECONDS) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError) as exc:
        raise ConnectorError(f"The webhook could not be reached ({exc.__class__.__name__}).") from None


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
