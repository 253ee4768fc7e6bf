"""Submitting access requests at the service level: the one ``submit`` the tests share.

Page-level submissions (an HTTP POST of the request form) are named ``submit_form``/``post_request``
in the modules that need them, so no two helpers share a name with different meanings."""

from datetime import timedelta

from accessgov.models import AccessRequest
from accessgov.services import access_requests

H = timedelta(hours=1)
JUSTIFICATION = "Investigating incident INC-42 on payments"


def submit(
    world, *, role=None, user=None, justification=JUSTIFICATION, duration=H, ticket="", **kwargs
) -> AccessRequest:
    """``user`` (the world's requester by default) asks for ``role`` (the world's role by default)
    through ``access_request_submit``; extra keywords (``starts_at``, ``client_address``) pass through."""
    return access_requests.access_request_submit(
        user or world.requester,
        role=role or world.role,
        duration=duration,
        justification=justification,
        ticket=ticket,
        **kwargs,
    )
