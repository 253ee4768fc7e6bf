"""Compliance reports: the read side behind /reports/ — FilterSets, selectors, aggregations, CSV rows.

Every report starts from what the viewer may see (``permissions.visible_grants`` or
``permissions.visible_access_requests``; auditors see everything, someone who may see nothing gets
an empty report). One FilterSet per report validates the filters (period in UTC days, system, role,
user, outcome) and the sort, and its ``qs`` is what both the page and the CSV read, so an export is
exactly the rows the page pages through, in the same order. ``filterset.filtered`` is the same rows
before sorting, for counts and charts.

Pages are keyset-paginated (``?after=<cursor>``, no COUNT): rows are ordered by the sort column
(NULLs last) then by id, and the cursor is the last row's (value, id).
"""

from accessgov.reports.access_history import ACCESS_HISTORY
from accessgov.reports.approvals import APPROVALS
from accessgov.reports.base import Report
from accessgov.reports.break_glass import BREAK_GLASS
from accessgov.reports.denied import DENIED

REPORTS = (ACCESS_HISTORY, APPROVALS, BREAK_GLASS, DENIED)

__all__ = ["ACCESS_HISTORY", "APPROVALS", "BREAK_GLASS", "DENIED", "REPORTS", "Report"]
