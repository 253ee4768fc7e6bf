"""Log lines cannot be forged: user text with newlines stays inside its own record's line, and every
continuation line (a traceback) is indented, so a line at the left margin is always a real record."""

import logging
import logging.config
import re
import sys

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from accessgov.logs import SingleLineFormatter, escape_controls

FORGED = "ok\n2026-01-01 00:00:00,000 INFO accessgov.security otp device enrolled user=1\r\x1b[2J"
RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


def portal_formatter() -> logging.Formatter:
    """The formatter the portal's console handler really uses (built from settings.LOGGING)."""
    config = settings.LOGGING["formatters"]["plain"]
    formatter = logging.config.DictConfigurator({"version": 1}).configure_formatter(dict(config))
    assert isinstance(formatter, SingleLineFormatter)
    return formatter


def test_the_portal_console_handler_writes_single_line_records():
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
    assert any(isinstance(h.formatter, SingleLineFormatter) for h in handlers)


def test_user_text_with_newlines_stays_on_its_records_line():
    record = logging.LogRecord(
        "accessgov.security", logging.WARNING, __file__, 1, "wrong code user=%s", (FORGED,), None
    )
    line = portal_formatter().format(record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert line.endswith(r"ok\n2026-01-01 00:00:00,000 INFO accessgov.security otp device enrolled user=1\r\x1b[2J")


def test_a_traceback_is_indented_so_it_cannot_pose_as_a_record():
    try:
        raise ValueError(FORGED)
    except ValueError:
        record = logging.LogRecord("accessgov", logging.ERROR, __file__, 1, "crashed", (), sys.exc_info())
    lines = portal_formatter().format(record).splitlines()
    assert RECORD_START.match(lines[0])
    assert all(line.startswith("    ") for line in lines[1:]), lines
    assert len([line for line in lines if RECORD_START.match(line)]) == 1


def test_escaping_is_unambiguous():
    assert escape_controls("a\\nb") == "a\\\\nb"  # a typed backslash-n is not a newline escape
    assert escape_controls("a\nb") == "a\\nb"
    assert escape_controls("tab\there\u2028") == "tab\\there\\u2028"


@pytest.mark.django_db
def test_every_record_of_a_hostile_sign_in_and_page_visit_is_one_line(caplog, requester):
    """Real code paths that log what a visitor typed: a failed sign-in (django-axes logs the
    username), a locked-out username, and a request for a path with an encoded newline."""
    client = Client()
    with caplog.at_level(logging.DEBUG):
        for _ in range(settings.AXES_FAILURE_LIMIT + 1):
            client.post(reverse("accounts:login"), {"username": FORGED, "password": "wrong"})
        client.get("/static/no-such%0aINFO-forged.css")
        client.get("/accounts/login/%0d%0a2026-01-01 INFO forged")
    formatter = portal_formatter()
    assert caplog.records
    forged_seen = False
    for record in caplog.records:
        line = formatter.format(record)
        if record.exc_info is None:
            assert "\n" not in line and "\r" not in line, line
        forged_seen |= "otp device enrolled user=1" in line
    assert forged_seen, "the hostile username reached a log record (so this test saw it)"


def test_an_expected_refusal_is_one_line_without_a_traceback_and_real_errors_keep_theirs():
    """A probe counted 68 tracebacks at WARNING in one crawl, one per 403: each was the portal working."""
    from django.core.exceptions import PermissionDenied

    from accessgov.logs import ExpectedRefusalFilter

    assert "expected_refusals" in settings.LOGGING["handlers"]["console"]["filters"]
    try:
        raise PermissionDenied("Only the system's owners manage who may request its roles.")
    except PermissionDenied:
        refusal = logging.LogRecord(
            "django.request",
            logging.WARNING,
            __file__,
            1,
            "Forbidden (Permission denied): %s",
            ("/x/",),
            sys.exc_info(),
        )
    assert ExpectedRefusalFilter().filter(refusal)
    line = portal_formatter().format(refusal)
    assert "\n" not in line and "Traceback" not in line
    assert line.endswith(
        "Forbidden (Permission denied): /x/: Only the system's owners manage who may request its roles."
    )
    try:
        raise ValueError("a real bug")
    except ValueError:
        error = logging.LogRecord(
            "django.request", logging.ERROR, __file__, 1, "Internal Server Error", (), sys.exc_info()
        )
    assert ExpectedRefusalFilter().filter(error)
    assert "Traceback" in portal_formatter().format(error)
    # A suspicious operation of the portal's own making keeps its traceback, from Django or from our code.
    from django.core.exceptions import DisallowedRedirect, SuspiciousOperation

    for name, exception in (("django.request", DisallowedRedirect), ("accessgov.evidence", SuspiciousOperation)):
        try:
            raise exception("the portal built this")
        except exception:
            ours = logging.LogRecord(name, logging.ERROR, __file__, 1, "%(what)s", ({"what": "x"},), sys.exc_info())
        assert ExpectedRefusalFilter().filter(ours)
        assert "Traceback" in portal_formatter().format(ours), name


@pytest.mark.django_db
def test_a_body_or_host_a_client_got_wrong_is_one_log_line_not_a_traceback():
    """A probe's finding: a multipart body with an empty boundary, sent by anyone to the sign-in page, wrote a
    40-line traceback per request. Its 400 is the portal answering as designed: one line with the reason."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    from accessgov.logs import ExpectedRefusalFilter

    handler = Collect()
    handler.setFormatter(portal_formatter())
    handler.addFilter(ExpectedRefusalFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        client = Client()
        login = reverse("accounts:login")
        body = client.generic("POST", login, b"x", content_type="multipart/form-data; boundary=")
        host = client.get(login, headers={"host": "evil.example"})
    finally:
        root.removeHandler(handler)
    assert body.status_code == 400 and host.status_code == 400
    refusals = [line for line in lines if "Unable to parse" in line or "HTTP_HOST" in line]
    assert len(refusals) == 2, lines
    assert all("\n" not in line and "Traceback" not in line for line in refusals), refusals
    assert "Invalid boundary" in refusals[0] or "boundary" in refusals[0].lower(), refusals
