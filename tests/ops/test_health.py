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
    assert body["broker_transport"] in {"filesystem", "redis"}
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
        "broker_transport": "redis",
    }
    assert "s3cret" not in response.content.decode()
