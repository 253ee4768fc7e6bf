"""The portal's own roles (Django groups). Object-level rights come from django-guardian."""

REQUESTER = "requester"
APPROVER = "approver"
SYSTEM_OWNER = "system owner"
AUDITOR = "auditor"
PORTAL_ADMIN = "portal admin"

ALL = (REQUESTER, APPROVER, SYSTEM_OWNER, AUDITOR, PORTAL_ADMIN)
