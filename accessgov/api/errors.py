"""One error format for every API answer that is not a success:
``{"error": {"code": "...", "message": "...", "fields": {...}}}`` (``fields`` only for invalid input).

Service errors map like the pages: NotAuthorized/StepUpRequired 403, TransitionNotAllowed 409,
PolicyViolation 400; invisible objects are 404; a body over DATA_UPLOAD_MAX_MEMORY_SIZE is 413."""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from accessgov.exceptions import AccessGovError, NotAuthorized, PolicyViolation, StepUpRequired, TransitionNotAllowed
from accessgov.views.errors import too_large_message


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    error: dict[str, object] = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    return {"error": error}


def _service_error(exc: AccessGovError) -> tuple[int, str]:
    if isinstance(exc, StepUpRequired):
        return status.HTTP_403_FORBIDDEN, "step_up_required"
    if isinstance(exc, NotAuthorized):
        return status.HTTP_403_FORBIDDEN, "not_authorized"
    if isinstance(exc, TransitionNotAllowed):
        return status.HTTP_409_CONFLICT, "conflict"
    if isinstance(exc, PolicyViolation):
        return status.HTTP_400_BAD_REQUEST, "policy_violation"
    return status.HTTP_400_BAD_REQUEST, "refused"


def _flatten(detail) -> str:
    if isinstance(detail, dict):
        return "; ".join(f"{key}: {_flatten(value)}" for key, value in detail.items())
    if isinstance(detail, list):
        return " ".join(_flatten(item) for item in detail)
    return str(detail)


def api_exception_handler(exc, context):
    """DRF's EXCEPTION_HANDLER: every refusal in the one format; anything else stays a 500."""
    if isinstance(exc, AccessGovError):
        code_status, code = _service_error(exc)
        return Response(error_body(code, str(exc)), status=code_status)
    if isinstance(exc, RequestDataTooBig):  # DRF reads the body when it parses it
        return Response(error_body("too_large", too_large_message()), status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound("Not found.")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = error_body("invalid", "The request is not valid: " + _flatten(detail), detail)
        return response
    codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
    code = codes if isinstance(codes, str) else "error"
    response.data = error_body(code, _flatten(getattr(exc, "detail", str(exc))))
    return response
