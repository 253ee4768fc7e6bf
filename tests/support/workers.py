"""Starting and stopping real Celery worker and beat processes for tests (solo pool, no gossip)."""

import os
import subprocess
import sys
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[2]


def _start(args: list[str], env: dict[str, str], output: IO | int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "portal", *args],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings", "DEBUG": "1", **env},
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
    )


def start_worker(
    env: dict[str, str],
    output: IO | int = subprocess.PIPE,
    loglevel: str = "WARNING",
    name: str = "",
    concurrency: int = 0,
) -> subprocess.Popen:
    """A worker with the solo pool, or (``concurrency`` > 0) the prefork pool as in production."""
    # One process consumes both queues here (tests count what each worker did); production runs a
    # worker per queue (docker-compose.yml).
    pool = ["--pool=prefork", f"--concurrency={concurrency}"] if concurrency else ["--pool=solo"]
    args = ["worker", *pool, "--queues=celery,notifications", f"--loglevel={loglevel}"]
    args += [
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        *([f"--hostname={name}@%h"] if name else []),
    ]
    return _start(args, env, output)


def start_beat(env: dict[str, str], output: IO | int = subprocess.PIPE, loglevel: str = "INFO") -> subprocess.Popen:
    """Beat keeps its schedule file under VAR_DIR (CELERY_BEAT_SCHEDULE_FILENAME): give each its own."""
    return _start(["beat", f"--loglevel={loglevel}"], env, output)


def start_scheduler(env: dict[str, str], output: IO | int = subprocess.PIPE) -> subprocess.Popen:
    """``manage.py run_scheduler`` (the expiry scheduler), logging at INFO."""
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_scheduler"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings", "DEBUG": "1", "LOG_LEVEL": "INFO", **env},
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop_worker(worker: subprocess.Popen) -> None:
    worker.terminate()
    try:
        worker.wait(timeout=15)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(timeout=5)
