"""Log lines that cannot be forged: one record is one line.

User text reaches log messages (paths, usernames, role names, errors reported by targets). A newline in
it could start a fake line ("... INFO accessgov.security otp device enrolled user=1") that a reader or a
SIEM would take for a real record. ``SingleLineFormatter`` writes control characters in the message as
escapes (``\\n``, ``\\r``, ``\\x1b`` ...) and indents every line of an attached traceback, so every line
that starts at the left margin is the start of a real record.
"""

import logging
import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str) -> str:
    """``text`` with backslashes doubled and control characters written as escapes (one line)."""
    return _CONTROL.sub(
        lambda m: _NAMED.get(
            m.group(), f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}"
        ),
        text.replace("\\", "\\\\"),
    )


class SingleLineFormatter(logging.Formatter):
    """The portal's log formatter (settings.LOGGING): the message on one line, tracebacks indented."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei) -> str:
        return "\n".join("    " + line for line in super().formatException(ei).splitlines())

    def formatStack(self, stack_info: str) -> str:
        return "\n".join("    " + line for line in stack_info.splitlines())


class ExpectedRefusalFilter(logging.Filter):
    """Drops the traceback Django attaches to its refusals: "Forbidden (Permission denied)" (a 403: someone
    asked for what they may not do), "Bad request (Unable to parse request body)" and the other 400s a client
    causes (a malformed multipart body, too many fields, a disallowed host). Each is the portal answering as
    designed; a traceback per refusal buried real errors, and let any anonymous client write 40 lines to the
    log for one request. The one-line record, with the path and the reason, stays at its level."""

    def filter(self, record: logging.LogRecord) -> bool:
        from django.core.exceptions import (
            BadRequest,
            DisallowedHost,
            PermissionDenied,
            RequestDataTooBig,
            TooManyFieldsSent,
            TooManyFilesSent,
        )
        from django.http.multipartparser import MultiPartParserError

        # Only what a client's request causes, and only as Django's request handling logs it: the same classes
        # raised by our own code (a redirect the portal builds, a file it opens) keep their tracebacks.
        refusals = (
            PermissionDenied,
            BadRequest,
            DisallowedHost,
            RequestDataTooBig,
            TooManyFieldsSent,
            TooManyFilesSent,
            MultiPartParserError,
        )
        from_request = record.name == "django.request" or record.name.startswith("django.security.")
        if from_request and record.exc_info and isinstance(record.exc_info[1], refusals):
            reason = str(record.exc_info[1])
            if reason and reason not in record.getMessage():  # django.security's message is the reason itself
                record.msg = f"{record.getMessage()}: %s"  # args already applied (a dict of them, too)
                record.args = (reason,)
            record.exc_info = None
            record.exc_text = None
        return True
