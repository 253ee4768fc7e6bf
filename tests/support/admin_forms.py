"""Submit Django admin forms the way a browser would: read every field of the rendered form (inputs,
checkboxes, selects, textareas), change some, post it back."""

from html.parser import HTMLParser


class _FormReader(HTMLParser):
    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id, self.inside, self.data = form_id, False, {}
        self._select: str | None = None
        self._textarea: str | None = None

    def _add(self, name: str, value: str) -> None:
        self.data.setdefault(name, []).append(value)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and a.get("id") == self.form_id:
            self.inside = True
        if not self.inside or ("name" not in a and tag != "option"):
            return
        if tag == "input" and a.get("type") not in ("submit", "button", "file"):
            if a.get("type") in ("checkbox", "radio"):
                if "checked" in a:
                    self._add(a["name"], a.get("value", "on"))
            else:
                self._add(a["name"], a.get("value", ""))
        elif tag == "select":
            self._select = a["name"]
            self.data.setdefault(a["name"], [])
        elif tag == "option" and self._select and "selected" in a:
            self._add(self._select, a.get("value", ""))
        elif tag == "textarea":
            self._textarea = a["name"]
            self._add(a["name"], "")

    def handle_endtag(self, tag):
        if tag == "form" and self.inside:
            self.inside = False
        if tag == "select":
            self._select = None
        if tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            self.data[self._textarea][-1] += data.removeprefix("\n") if not self.data[self._textarea][-1] else data


def admin_form_data(html: str, form_id: str) -> dict[str, list[str]]:
    reader = _FormReader(form_id)
    reader.feed(html)
    return reader.data


def post_admin_form(client, url: str, form_id: str, **changes):
    """GET the admin page, keep every value, apply ``changes`` (None removes a field), POST it."""
    page = client.get(url)
    assert page.status_code == 200, (url, page.status_code)
    data = admin_form_data(page.content.decode(), form_id)
    for name, value in changes.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value if isinstance(value, list) else [str(value)]
    data.pop("csrfmiddlewaretoken", None)
    return client.post(url, data)


def add_user_in_admin(client, username: str):
    """``client`` (a signed-in admin) adds the account ``username`` through the admin's add form; returns it."""
    from django.urls import reverse

    from accessgov.models import User

    password = "long enough pass 42"
    response = client.post(
        reverse("admin:accessgov_user_add"), {"username": username, "password1": password, "password2": password}
    )
    assert response.status_code == 302
    return User.objects.get(username=username)
