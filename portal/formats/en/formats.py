"""Date formats for English (issue 18): the admin and any ``|date`` without a format show times with
their zone's name ("2026-11-24 10:30 CET"), in the zone the time-zone middleware activated."""

DATETIME_FORMAT = "Y-m-d H:i T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i T"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i"
