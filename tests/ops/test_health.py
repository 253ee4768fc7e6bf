"""/healthz: public JSON with database and broker status, and nothing secret."""

import pytest
from django.urls import reverse

from portal.celery import app as celery_app


@pytest.mark.django_db
def test_healthz_reports_database_and_broker_without_signing_in(client):
    response = client.get(reverse("healthz"))
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert body["broker"] == "ok"
    assert body["broker_transport"] in {"filesystem", "redis"} and body["static"] == "ok"
    assert response["Cache-Control"].startswith("max-age=0")
    # A load balancer that probes with HEAD gets the same answer, without the body.
    head = client.head(reverse("healthz"))
    assert head.status_code == 200 and head.content == b""


@pytest.mark.django_db
def test_healthz_is_503_when_the_broker_is_down(client, monkeypatch):
    # Port 9 (discard) has no Redis on it: a real connection failure, not a mock.
    monkeypatch.setattr(celery_app.conf, "broker_url", "redis://:s3cret-password@127.0.0.1:9/0")
    response = client.get(reverse("healthz"))
    assert response.status_code == 503
    body = response.json()
    assert body == {
        "status": "degraded",
        "database": "ok",
        "broker": "unavailable",
        "static": "ok",
        "broker_transport": "redis",
    }
    assert "s3cret" not in response.content.decode()
    # The readiness probe: the portal serves (and decides) through a broker outage, so it stays in rotation.
    ready = client.get(reverse("healthz_ready"))
    assert ready.status_code == 200 and ready.json()["broker"] == "unavailable"


@pytest.mark.django_db
def test_without_collected_static_files_both_probes_say_so(client, settings, tmp_path):
    """A production install that skipped ``collectstatic`` serves a 500 on every page: the probes must not say ok."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
    }
    settings.STATIC_ROOT = str(tmp_path)  # empty: no manifest (Django's test signals reset the storage)
    for name in ("healthz", "healthz_ready"):
        response = client.get(reverse(name))
        assert response.status_code == 503, name
        assert response.json()["static"] == "unavailable"
