"""Production-shaped configuration: `check --deploy` is clean, and docker-compose has the full shape."""

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]

PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "portal.settings",
    "DEBUG": "0",
    "SECRET_KEY": "a" * 20 + "production-like-secret-key-with-enough-entropy-9f8e7d6c5b4a",
    "ALLOWED_HOSTS": "accessgov.example.com",
    "DATABASE_URL": "sqlite:////tmp/accessgov-deploy-check.sqlite3",
}


def _manage(*args: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DEBUG", "SECRET_KEY", "DATABASE_URL", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env, "VAR_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION_ENV, tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_settings_refuse_to_start_without_a_secret_key(tmp_path):
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "SECRET_KEY"}
    result = _manage("check", env=env, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr
    assert "Traceback" not in result.stderr  # one clear line, the operator's first error


def _queues_consumed(commands: list[str]) -> set[str]:
    return {
        queue
        for command in commands
        for found in re.findall(r"--queues=([\w,]+)", command)
        for queue in found.split(",")
    }


def test_every_task_queue_is_consumed_by_docker_compose_make_run_and_the_benchmark():
    """Notifications have their own queue (removals never wait behind emails): a worker command that
    forgot it would leave every email unsent."""
    from portal.celery import DEFAULT_QUEUE, app

    queues = {app.conf.task_default_queue} | {route["queue"] for route in app.conf.task_routes.values()}
    assert queues == {DEFAULT_QUEUE, "notifications"}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    workers = [" ".join(s["command"]) for s in compose["services"].values() if "worker" in s.get("command", [])]
    assert _queues_consumed(workers) == queues
    assert all("--queues=" in command for command in workers)  # none falls back to the default queue alone
    assert _queues_consumed([(ROOT / "scripts" / "run").read_text()]) == queues
    bench = (ROOT / "bench" / "revocation_lag.py").read_text()
    assert 'start_worker(args.concurrency, "celery")' in bench
    assert 'start_worker(args.notify_concurrency, "notifications")' in bench


def test_docker_compose_has_the_production_shape():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "web", "worker", "beat"} <= set(services)
    for name in ("postgres", "redis", "web"):
        assert "healthcheck" in services[name], name
    assert "gunicorn" in " ".join(services["web"]["command"])
    for name in ("web", "worker", "beat"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://")
        assert env["CELERY_BROKER_URL"].startswith("redis://")
    assert "postgres-data" in compose["volumes"]
    # What an operator's install probe found: every setting can come from .env; the web port only on the
    # loopback (a direct client could choose its X-Forwarded-For); a health check that can pass.
    for name in ("web", "worker", "notifier", "beat", "scheduler", "migrate"):
        assert services[name]["env_file"] == [{"path": ".env", "required": False}], name
    assert services["web"]["ports"] == ["127.0.0.1:8000:8000"]
    probe = " ".join(services["web"]["healthcheck"]["test"])
    assert "/healthz/ready" in probe and "'Host'" in probe
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", "var/", ".venv/", ".git/"} <= set(ignored)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.index("COPY accessgov_cli") < dockerfile.index("pip install")
    assert "/var/lib/accessgov-evidence" in dockerfile


def test_gunicorn_trusts_no_forwarded_headers_itself():
    """gunicorn trusts X-Forwarded-Proto from 127.0.0.1 by default and then tells Django the request was
    HTTPS; AccessGov reads proxy headers itself, only with TRUSTED_PROXY_COUNT set."""
    config: dict = {}
    exec((ROOT / "gunicorn.conf.py").read_text(), config)  # noqa: S102 - our own config file
    assert config["forwarded_allow_ips"] == ""


def test_the_expiry_scheduler_runs_in_docker_compose_with_a_standby_and_in_make_run():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    scheduler = compose["services"]["scheduler"]
    assert scheduler["command"] == ["python", "manage.py", "run_scheduler"]
    assert scheduler["deploy"]["replicas"] >= 2  # one holds the lease, the other stands by
    assert scheduler["environment"]["DATABASE_URL"].startswith("postgres://")
    assert "manage.py run_scheduler" in (ROOT / "scripts" / "run").read_text()
    # Nothing in the broker or a worker ends a grant any more: no eta timers are sent.
    for path in (ROOT / "accessgov").rglob("*.py"):
        assert "eta=" not in path.read_text(), path
