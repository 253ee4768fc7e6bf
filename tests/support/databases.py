"""The database of the running test as a DATABASE_URL, for subprocesses."""

from urllib.parse import quote

from django.db import connection


def database_url_of_this_test() -> str:
    """The database the test runs on (pytest-django's test_… database), as a DATABASE_URL."""
    s = connection.settings_dict
    credentials = quote(s["USER"] or "", safe="")
    if s.get("PASSWORD"):
        credentials += ":" + quote(s["PASSWORD"], safe="")
    host = s.get("HOST") or "127.0.0.1"
    port = f":{s['PORT']}" if s.get("PORT") else ""
    return f"postgres://{credentials}@{host}{port}/{quote(s['NAME'], safe='')}"
