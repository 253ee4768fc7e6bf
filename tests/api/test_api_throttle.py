"""API throttling (issue 14, item 12): every call a token makes counts — also those refused for a
missing scope — and the count lives in a store every web worker process shares (the database by
default, Redis when SHARED_CACHE_URL names it), so 3 gunicorn workers allow the limit, not three times it."""

import json
import os
import subprocess
import sys
import time

import pytest
import time_machine
from django.conf import settings as django_settings
from django.test import override_settings

from accessgov.models import ApiToken
from tests.support.api_helpers import api_client, make_token
from tests.support.databases import database_url_of_this_test

V1 = "/api/v1"
Scope = ApiToken.Scope


@pytest.mark.django_db
def test_calls_refused_for_a_missing_scope_count_towards_the_limit(make_user, settings):
    settings.API_THROTTLE_RATE = "3/min"
    with time_machine.travel(time.time(), tick=False):  # one counting window, whatever the clock says
        _, secret = make_token(make_user("ci"), scopes=[Scope.REQUESTS_READ])
        client = api_client(secret)
        refused = [client.get(f"{V1}/decisions/").status_code for _ in range(3)]
        assert refused == [403, 403, 403]
        response = client.get(f"{V1}/requests/")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "throttled"
    assert 0 < int(response["Retry-After"]) <= 60


@pytest.mark.django_db
def test_the_count_starts_again_in_the_next_window_and_is_per_token(make_user, settings):
    settings.API_THROTTLE_RATE = "2/min"
    start = 1_800_000_000.0  # the start of a minute
    with time_machine.travel(start + 10, tick=False):
        _, secret = make_token(make_user("ci"))
        _, other_secret = make_token(make_user("other"))
        client = api_client(secret)
        assert [client.get(f"{V1}/requests/").status_code for _ in range(3)] == [200, 200, 429]
        assert api_client(other_secret).get(f"{V1}/requests/").status_code == 200
        assert client.get(f"{V1}/requests/")["Retry-After"] == "50"
    with time_machine.travel(start + 60, tick=False):
        assert client.get(f"{V1}/requests/").status_code == 200


# --- Several worker processes, one count ------------------------------------------------------------

WORKER = """
import json, os, sys, time_machine
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
import django
django.setup()
from django.test import Client
secret, calls, at = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
client = Client(headers={"Authorization": f"Bearer {secret}"})
with time_machine.travel(at, tick=False):
    print(json.dumps([client.get("/api/v1/requests/").status_code for _ in range(calls)]))
"""


def _run_workers(secret: str, *, workers: int, calls: int, env: dict[str, str]) -> list[int]:
    """``workers`` separate Python processes (like gunicorn's), each with its own memory, each making
    ``calls`` API calls with the same token at the same frozen instant; all their answers."""
    at = time.time()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, secret, str(calls), str(at)],
            env={**os.environ, **env, "DATABASE_URL": database_url_of_this_test()},
            cwd=django_settings.BASE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    statuses = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-3000:]
        statuses += json.loads(out.strip().splitlines()[-1])
    return statuses


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_three_worker_processes_allow_the_limit_once_counted_in_the_database(make_user):
    _, secret = make_token(make_user("ci"), days=1)
    statuses = _run_workers(secret, workers=3, calls=4, env={"API_THROTTLE_RATE": "4/hour"})
    assert sorted(statuses) == [200] * 4 + [429] * 8


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_three_worker_processes_allow_the_limit_once_counted_in_redis(make_user):
    redis_url = os.environ["REDIS_URL"]
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    _, secret = make_token(make_user("ci"), days=1)
    statuses = _run_workers(
        secret, workers=3, calls=4, env={"API_THROTTLE_RATE": "4/hour", "SHARED_CACHE_URL": redis_url}
    )
    assert sorted(statuses) == [200] * 4 + [429] * 8
    assert redis.Redis.from_url(redis_url).keys("*throttle*")  # the count really lived in Redis


@pytest.mark.redis
@pytest.mark.django_db
def test_the_shared_store_is_redis_when_configured(make_user, settings):
    """The same count through Django's Redis cache backend in this process (INCR is atomic there)."""
    settings.API_THROTTLE_RATE = "2/min"
    shared = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": os.environ["REDIS_URL"]}
    with override_settings(CACHES={**django_settings.CACHES, "shared": shared}):
        from django.core.cache import caches

        caches["shared"].clear()
        with time_machine.travel(time.time(), tick=False):
            _, secret = make_token(make_user("ci"), scopes=[Scope.REQUESTS_READ])
            client = api_client(secret)
            statuses = [client.get(f"{V1}/{path}/").status_code for path in ("events", "requests", "requests")]
        assert statuses == [403, 200, 429]
        caches["shared"].clear()


@pytest.mark.django_db
def test_with_redis_unreachable_the_api_answers_and_still_counts_in_the_process(make_user, settings):
    """Redis down (the production shared store): a 500 on every API call was the probe's finding. Now the
    calls are counted in this process, so a token is still limited, and nothing fails."""
    settings.API_THROTTLE_RATE = "2/min"
    dead = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    with (
        override_settings(CACHES={**django_settings.CACHES, "shared": dead}),
        time_machine.travel(1_900_000_000, tick=False),
    ):
        _, secret = make_token(make_user("ci"), scopes=[Scope.REQUESTS_READ])
        client = api_client(secret)
        statuses = [client.get(f"{V1}/requests/").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_the_embedded_default_counts_in_the_database_not_in_process_memory():
    shared = django_settings.CACHES["shared"]
    assert shared["BACKEND"] == "django.core.cache.backends.db.DatabaseCache"
    assert shared["OPTIONS"]["MAX_ENTRIES"] >= 1_000_000  # Django's default (300) would evict live counters
