"""django-guardian's "Object permissions" pages in /admin/ render nothing our Content-Security-Policy blocks (its
stock page put an empty inline <style> in the head: a CSP violation on every visit), and still work: an admin
picks a user, proposes a permission (four-eyes), a second admin approves it, the page shows it, and taking it
away applies at once."""

from html.parser import HTMLParser

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse
from guardian.shortcuts import get_user_perms

from accessgov.models import ChangeRequest
from accessgov.services import changes
from tests.conftest import verify_session
from tests.support.crawl import hardening_problems

pytestmark = pytest.mark.django_db


class _Styles(HTMLParser):
    """What ``style-src 'self'`` blocks: <style> elements without a nonce and style attributes; and images
    without a text alternative."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.images = 0

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        if tag == "style" and not values.get("nonce"):
            self.problems.append("a <style> element without a nonce")
        if "style" in values:
            self.problems.append(f"a style attribute on <{tag}>")
        if tag == "img":
            self.images += 1
            if not values.get("alt"):
                self.problems.append(f"an image without alt text: {values.get('src')}")


def _blocked(html: str) -> _Styles:
    parser = _Styles()
    parser.feed(html)
    parser.close()
    return parser


def _page(client: Client, url: str) -> str:
    response = client.get(url, secure=True)
    assert response.status_code == 200, url
    assert hardening_problems(response, url) == []
    html = response.content.decode()
    assert _blocked(html).problems == [], url
    return html


@pytest.mark.parametrize("model", ["system", "role"])
def test_the_object_permissions_pages_have_no_inline_style(model, world, admins):
    obj = world.system if model == "system" else world.role
    group = Group.objects.create(name="approvers-group")
    client = verify_session(Client(), admins[0])
    html = _page(client, reverse(f"admin:accessgov_{model}_permissions", args=[obj.pk]))
    # The head the admin's change pages have: our icon, the admin's translations and scripts.
    assert 'rel="icon"' in html and reverse("admin:jsi18n") in html and "/static/admin/css/forms.css" in html
    _page(client, reverse(f"admin:accessgov_{model}_permissions_manage_user", args=[obj.pk, world.approver.pk]))
    _page(client, reverse(f"admin:accessgov_{model}_permissions_manage_group", args=[obj.pk, group.pk]))


def test_a_permission_is_granted_and_removed_through_the_object_permissions_page(world, admins, make_user):
    first, second = admins
    newcomer = make_user("perm_newcomer")
    page = reverse("admin:accessgov_system_permissions", args=[world.system.pk])
    client = verify_session(Client(), first)

    # The page's "Manage user" form leads to that user's permissions on the object.
    response = client.post(page, {"user": newcomer.username, "submit_manage_user": "Manage user"}, secure=True)
    user_page = reverse("admin:accessgov_system_permissions_manage_user", args=[world.system.pk, newcomer.pk])
    assert response.status_code == 302 and response["Location"] == user_page
    _page(client, user_page)

    # Granting is proposed; a second admin approves it; the page then shows it (an icon with a text alternative).
    response = client.post(user_page, {"permissions": ["approve_system"]}, secure=True)
    change = ChangeRequest.objects.get(kind="object_permission")
    assert response.status_code == 302 and "approve_system" not in get_user_perms(newcomer, world.system)
    changes.change_approve(second, change.pk)
    assert "approve_system" in get_user_perms(newcomer, world.system)
    html = _page(client, page)
    assert f"<td>{newcomer.username}</td>" in html and 'alt="Yes"' in html and _blocked(html).images > 0

    # Taking it away applies at once.
    response = client.post(user_page, {}, secure=True)
    assert response.status_code == 302
    assert "approve_system" not in get_user_perms(newcomer, world.system)
    assert f"<td>{newcomer.username}</td>" not in _page(client, page)
