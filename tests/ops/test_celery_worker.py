"""A real Celery worker process on the embedded filesystem broker (what `make run` uses) and on Redis."""

import os
import time
from pathlib import Path

import pytest
from celery import Celery

from tests.support.workers import start_worker, stop_worker

ROOT = Path(__file__).resolve().parents[2]


def _round_trip(env: dict[str, str], broker: str, backend: str, transport_options: dict) -> str:
    client = Celery("probe", broker=broker, backend=backend, set_as_current=False)
    client.conf.broker_transport_options = transport_options
    worker = start_worker(env)
    try:
        result = client.send_task("accessgov.tasks.ping")
        return result.get(timeout=30)
    finally:
        stop_worker(worker)
        client.close()


def test_worker_on_the_embedded_filesystem_broker_runs_a_task(tmp_path):
    queue = tmp_path / "broker" / "queue"
    queue.mkdir(parents=True)
    (tmp_path / "broker" / "processed").mkdir()
    (tmp_path / "results").mkdir()
    env = {"VAR_DIR": str(tmp_path), "CELERY_BROKER_URL": "filesystem://"}
    # As settings.py does: the exchange tables under VAR_DIR, not ./control in the repository.
    control = tmp_path / "broker" / "control"
    options = {"data_folder_in": str(queue), "data_folder_out": str(queue), "control_folder": str(control)}
    started = time.monotonic()
    assert _round_trip(env, "filesystem://", f"file://{tmp_path / 'results'}", options) == "pong"
    assert time.monotonic() - started < 30


@pytest.mark.redis
def test_worker_on_redis_runs_a_task(tmp_path):
    url = os.environ["REDIS_URL"]
    env = {"VAR_DIR": str(tmp_path), "CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url}
    assert _round_trip(env, url, url, {}) == "pong"
