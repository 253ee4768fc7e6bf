"""One catalogue rule for pages and API (issue 14, item 22): a person sees the systems and roles they
may request, decide or own (auditors: all), through ``permissions.visible_systems`` and
``permissions.visible_roles``. The systems pages, the filter lists of the grants page and the reports,
and the API all answer the same; a system outside it is a 404 (no existence oracle)."""

import re
from datetime import UTC, datetime

import pytest
import time_machine
from django.test import Client
from django.urls import reverse

from tests.conftest import verify_session
from tests.support.api_helpers import make_token
from tests.support.factories import RoleFactory, SystemFactory

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PERSONAS = ["requester", "approver", "approver2", "owner", "auditor", "outsider"]


@pytest.fixture(autouse=True)
def _fixed_clock():
    with time_machine.travel(T0, tick=True):
        yield


@pytest.fixture
def catalogue(world):
    """Besides the world's Payments DB (two roles), a Billing system with a role nobody but auditors
    may see, and a third Payments role the requester is not eligible for and nobody decides."""
    world.billing = SystemFactory(name="Billing ledger", slug="billing-ledger")
    world.billing_role = RoleFactory(system=world.billing, name="superuser", approvals_required=0)
    world.hidden_role = RoleFactory(system=world.system, name="break-everything")
    return world


def _api_catalogue(user) -> tuple[set[str], set[str]]:
    _, secret = make_token(user, name="catalogue")
    client = Client(headers={"Authorization": f"Bearer {secret}"})
    systems = {s["slug"] for s in client.get("/api/v1/systems/").json()["results"]}
    roles = {r["path"] for r in client.get("/api/v1/roles/").json()["results"]}
    return systems, roles


def _page_catalogue(client: Client, slugs: list[str]) -> tuple[set[str], set[str]]:
    listing = client.get(reverse("system_list")).content.decode()
    systems = {slug for slug in slugs if reverse("system_detail", args=[slug]) in listing}
    roles = set()
    for slug in slugs:
        detail = client.get(reverse("system_detail", args=[slug]))
        if slug in systems:
            assert detail.status_code == 200
            names = re.findall(r'<td class="role-name"[^>]*>([^<]+)</td>', detail.content.decode())
            roles |= {f"{slug}/{name}" for name in names}
        else:
            assert detail.status_code == 404
    return systems, roles


EXPECTED = {
    "requester": ({"payments-db"}, {"payments-db/read-write", "payments-db/admin"}),
    "approver": ({"payments-db"}, {"payments-db/read-write", "payments-db/admin"}),
    "approver2": (
        {"payments-db"},
        {"payments-db/read-write", "payments-db/admin", "payments-db/break-everything"},
    ),  # approve_system on Payments DB: every role of it
    "owner": ({"payments-db"}, {"payments-db/read-write", "payments-db/admin", "payments-db/break-everything"}),
    "auditor": (
        {"payments-db", "billing-ledger"},
        {"payments-db/read-write", "payments-db/admin", "payments-db/break-everything", "billing-ledger/superuser"},
    ),
    "outsider": (set(), set()),
}


@pytest.mark.parametrize("persona", PERSONAS)
def test_the_systems_pages_show_exactly_the_catalogue_the_api_answers(catalogue, persona):
    user = getattr(catalogue, persona)
    pages = _page_catalogue(verify_session(Client(), user), ["payments-db", "billing-ledger"])
    assert pages == _api_catalogue(user) == EXPECTED[persona]


def test_someone_eligible_for_nothing_sees_no_system_and_no_policy(catalogue):
    client = verify_session(Client(), catalogue.outsider)
    listing = client.get(reverse("system_list")).content.decode()
    assert "Payments DB" not in listing and "Billing ledger" not in listing
    assert "not eligible for" in listing
    assert client.get(reverse("system_detail", args=["billing-ledger"])).status_code == 404
    assert client.get(reverse("system_detail", args=["no-such-system"])).status_code == 404


@pytest.mark.parametrize("page", ["grants_list", "report_access", "report_approvals", "report_denied"])
def test_filter_lists_offer_only_systems_and_roles_in_the_viewers_catalogue(catalogue, page):
    requester = verify_session(Client(), catalogue.requester).get(reverse(page)).content.decode()
    assert "Payments DB · read-write" in requester and "Payments DB" in requester
    assert "Billing ledger" not in requester and "break-everything" not in requester
    outsider = verify_session(Client(), catalogue.outsider).get(reverse(page)).content.decode()
    assert "Payments DB" not in outsider and "Billing ledger" not in outsider
    auditor = verify_session(Client(), catalogue.auditor).get(reverse(page)).content.decode()
    assert "Billing ledger · superuser" in auditor and "Payments DB · break-everything" in auditor


def test_kept_filter_lists_follow_a_renamed_role_and_stay_bounded(catalogue, monkeypatch):
    """The lists are kept in the process (catalog._keep); saving a role drops them, and past the bound on
    distinct viewers' catalogues the kept lists start again rather than grow."""
    from accessgov import catalog
    from accessgov.models import Role

    requester, auditor = verify_session(Client(), catalogue.requester), verify_session(Client(), catalogue.auditor)
    assert "Payments DB · read-write" in requester.get(reverse("grants_list")).content.decode()
    assert "Payments DB · read-write" in auditor.get(reverse("grants_list")).content.decode()
    role = Role.objects.get(system__slug="payments-db", name="read-write")
    role.name = "read-write-renamed"
    role.save()
    for client in (requester, auditor):
        page = client.get(reverse("grants_list")).content.decode()
        assert "Payments DB · read-write-renamed" in page and "Payments DB · read-write<" not in page

    monkeypatch.setattr(catalog, "_KEPT_OPTION_LISTS", 2)
    for n in range(10):
        catalog._options_html("roles", frozenset({role.pk, 10_000 + n}))
        assert len(catalog._kept) <= 4 + 2 * 2 + 1
