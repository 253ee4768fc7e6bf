"""The request a portal view receives, typed for what the middleware guarantees: the OTP middleware lets
only a verified, signed-in ``User`` reach a portal view (anonymous and password-only sessions are sent to
sign in or to the OTP step first), and the client-address middleware sets ``client_address``. Views
annotate ``request: PortalRequest`` so mypy checks what they pass to services as a ``User``."""

from django.http import HttpRequest

from accessgov.models import User


class PortalRequest(HttpRequest):
    user: User  # narrower than HttpRequest's: the middleware guarantees it
    client_address: str | None
