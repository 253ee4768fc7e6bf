"""Errors services raise; views turn them into messages (409/403/400), the sweeper into skips."""


class AccessGovError(Exception):
    """Base class: ``str(error)`` is a message fit to show the person who acted."""


class TransitionNotAllowed(AccessGovError):
    """The object is not in a state that allows this (already decided, already ended, …): HTTP 409."""


class PolicyViolation(AccessGovError):
    """The role's policy refuses this (duration too long, ticket missing, not eligible, …): HTTP 400."""


class NotAuthorized(AccessGovError):
    """The actor may see the object but may not do this to it: HTTP 403."""


class StepUpRequired(NotAuthorized):
    """The action needs a TOTP code entered within the last few minutes."""
