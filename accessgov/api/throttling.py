"""Requests per token (API_THROTTLE_RATE, e.g. "600/min"; read per request so tests can change it).

Counted in the "shared" cache (settings.CACHES), which every web and worker process uses: the
database by default, Redis in production. With a per-process store, gunicorn's three workers
allowed a token three times its limit. Counting is per fixed window aligned to the clock (a minute
for "/min"): one atomic increment per call, and the window's end is the ``Retry-After``. Every call
of an authenticated token counts — the base view asks before it checks the token's scopes — so a
token hammering an endpoint it may not use is slowed down too.

When the shared store cannot be reached (Redis down), calls are counted in the process instead — each
web process then allows a token its limit — and the API keeps answering: a broker outage must not stop
pipelines from asking for, deciding or reading access (docs/OPERATIONS.md).
"""

import logging
import time

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from django.db import transaction
from rest_framework.throttling import BaseThrottle

from accessgov.models import ApiToken

STORE = "shared"
PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
logger = logging.getLogger("accessgov.api")
# Where calls are counted while the shared store is unreachable (per process).
_IN_PROCESS = LocMemCache("accessgov-throttle-fallback", {"OPTIONS": {"MAX_ENTRIES": 10_000}})


def parse_rate(rate: str) -> tuple[int, int]:
    """``"600/min"`` → (600, 60): calls allowed, and the window in seconds."""
    count, period = rate.split("/")
    return int(count), PERIODS[period.strip()[0]]


def count_call(token: ApiToken, window: int, window_seconds: int) -> int:
    """Count one call of ``token`` in fixed window number ``window`` and return the window's count.

    Redis increments atomically (INCR). Django's other cache backends read and then write, so there
    the token's row is locked for the increment: concurrent calls of one token, in any process, are
    counted one after the other, and none is lost."""
    cache = caches[STORE]
    # The hash prefix keeps the key unique even where ids are reused (a restored or test database).
    key = f"throttle:api-token:{token.pk}:{token.key_hash[:12]}:{window}"
    timeout = window_seconds + 60  # outlives its window a little: an expiring key never resets a count
    if isinstance(cache, RedisCache):
        try:
            return _increment(cache, key, timeout)
        except Exception as error:
            logger.warning("api throttle: the shared store is unreachable (%s); counting in this process", error)
            return _increment(_IN_PROCESS, key, timeout)
    with transaction.atomic():
        list(ApiToken.objects.select_for_update().filter(pk=token.pk).values_list("pk", flat=True))
        return _increment(cache, key, timeout)


def _increment(cache, key: str, timeout: int) -> int:
    cache.add(key, 0, timeout)
    try:
        return cache.incr(key)
    except ValueError:  # the key expired or was evicted between the two calls: start it again
        cache.add(key, 0, timeout)
        return cache.incr(key)


class TokenRateThrottle(BaseThrottle):
    """DRF throttle: at most N calls per token per window; the 429 says when the window ends."""

    def __init__(self) -> None:
        self._wait: float | None = None

    def allow_request(self, request, view) -> bool:
        token = request.auth
        if not isinstance(token, ApiToken):
            return True  # unauthenticated calls are refused before they do anything
        limit, window_seconds = parse_rate(settings.API_THROTTLE_RATE)
        now = time.time()
        window = int(now // window_seconds)
        if count_call(token, window, window_seconds) <= limit:
            return True
        self._wait = (window + 1) * window_seconds - now
        return False

    def wait(self) -> float | None:
        return self._wait
