"""Connector configuration in the admin: validated, and the secret is never shown back."""

from html import unescape

import pytest
from django.test import Client, override_settings

from accessgov.models import System
from tests.conftest import verify_session

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(make_user):
    return verify_session(Client(), make_user("root", is_staff=True, is_superuser=True))


def _post(client, **fields):
    data = {
        "name": "Target DB",
        "slug": "target-db",
        "environment": "production",
        "description": "",
        "slack_webhook_url": "",
        "connector": "postgres",
        "connector_config": "{}",
        "connector_secret": "",
        "roles-TOTAL_FORMS": "0",
        "roles-INITIAL_FORMS": "0",
        "roles-MIN_NUM_FORMS": "0",
        "roles-MAX_NUM_FORMS": "1000",
        **fields,
    }
    return client.post("/admin/accessgov/system/add/", data)


def test_postgres_connector_config_is_validated(admin_client):
    response = _post(admin_client, connector_config='{"host": "db", "password": "x", "port": "nope"}')
    html = response.content.decode()
    assert response.status_code == 200
    assert "'dbname' is required." in unescape(html)  # escaped ('&#39;' by Jinja2's widgets, '&#x27;' by Django)
    assert "Put the password in the secret field" in html
    assert "This connector needs a secret." in html
    assert not System.objects.exists()


def test_secret_is_stored_never_rendered_and_kept_when_left_empty(admin_client):
    config = '{"host": "db.internal", "dbname": "app", "user": "accessgov_provisioner"}'
    response = _post(admin_client, connector_config=config, connector_secret="s3cret-pass")
    assert response.status_code == 302, response.content.decode()[:2000]
    system = System.objects.get()
    assert system.connector_secret == "s3cret-pass"
    page = admin_client.get(f"/admin/accessgov/system/{system.pk}/change/").content.decode()
    assert "s3cret-pass" not in page
    response = _post(admin_client, connector_config=config, connector_secret="")
    # editing again with an empty secret keeps the stored one
    data = {
        "name": "Target DB",
        "slug": "target-db",
        "environment": "production",
        "description": "",
        "slack_webhook_url": "",
        "connector": "postgres",
        "connector_config": config,
        "connector_secret": "",
        "roles-TOTAL_FORMS": "0",
        "roles-INITIAL_FORMS": "0",
        "roles-MIN_NUM_FORMS": "0",
        "roles-MAX_NUM_FORMS": "1000",
    }
    response = admin_client.post(f"/admin/accessgov/system/{system.pk}/change/", data)
    assert response.status_code == 302
    system.refresh_from_db()
    assert system.connector_secret == "s3cret-pass"
    history = admin_client.get(f"/admin/accessgov/system/{system.pk}/history/").content.decode()
    assert "s3cret-pass" not in history


def test_webhook_to_an_internal_address_is_refused_unless_allowed(admin_client):
    config = '{"url": "http://127.0.0.1:8080/hook"}'
    with override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=False):  # the production default, whatever ran before
        response = _post(admin_client, connector="webhook", connector_config=config, connector_secret="whsec_c2VjcmV0")
    assert "resolves to an internal address" in response.content.decode()
    with override_settings(WEBHOOK_ALLOW_PRIVATE_TARGETS=True):
        response = _post(admin_client, connector="webhook", connector_config=config, connector_secret="whsec_c2VjcmV0")
    assert response.status_code == 302


def test_admin_pages_name_the_icon_so_browsers_do_not_ask_for_a_missing_favicon(admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert '<link rel="icon" href="/static/img/favicon.svg" type="image/svg+xml">' in page
    assert "<title>" in page  # Django's admin page itself still renders around it


def test_the_admin_index_names_models_as_the_portal_does(admin_client):
    page = admin_client.get("/admin/").content.decode()
    for name in ("API tokens", "Break-glass follow-ups", "Auto-approval rules", "Provisioning outbox items"):
        assert f">{name}</a>" in page, name
    for django_default in ("Api tokens", "Break glass follow ups", "Auto approval rules", ">Outbox items<"):
        assert django_default not in page
