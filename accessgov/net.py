"""The real client address of an HTTP request."""

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def _valid(address: str) -> str | None:
    try:
        return str(ipaddress.ip_address(address.strip()))
    except ValueError:
        return None


def client_address(request: HttpRequest) -> str | None:
    """Return the client's IP address.

    ``X-Forwarded-For`` is trusted only when ``TRUSTED_PROXY_COUNT`` proxies are configured: the
    address is then the one the outermost trusted proxy saw (the N-th entry from the right), so a
    client cannot choose its own address by sending the header itself. Used by django-axes (password
    lockout), the OTP failure log and access events.
    """
    remote = _valid(request.META.get("REMOTE_ADDR", "") or "")
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies <= 0:
        return remote
    forwarded = [part for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if len(forwarded) < proxies:
        return remote
    return _valid(forwarded[-proxies]) or remote
