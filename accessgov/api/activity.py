"""``POST /api/v1/activity/``: activity reported by a log shipper or a target's own tooling.

Two ways in, both for machines only:
- a **service token** (``Authorization: Bearer agv_s_…``) with the ``activity:write`` scope, of a service
  account (four-eyed); limited to roles, it reports only for their systems;
- a **Standard Webhooks signature** (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``) made with
  the system's connector secret, for systems provisioned by the webhook connector (their automation
  already holds that secret). A timestamp more than 5 minutes off is refused; a batch whose id was seen
  already is answered 200 with ``duplicate: true`` and stores nothing (a replay, or a retry after a lost
  answer).

Body: ``application/json`` ``{"system": "<slug>", "records": [...], "batch_id": "…"}``, or JSON lines
(``application/x-ndjson``, one record per line, with ``?system=<slug>`` and optionally ``&batch_id=``).
Records are PostgreSQL jsonlog entries (pgaudit lines) or ``{"type": "statement" | "session", …}``
(docs/ACTIVITY.md). All or nothing: one bad record refuses the batch with 400 naming it.
"""

import json
import re

from django.conf import settings
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import (
    AuthenticationFailed,
    NotAuthenticated,
    ParseError,
    PermissionDenied,
    UnsupportedMediaType,
)
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle

from accessgov import clock, inputs, permissions
from accessgov.api.schema import ErrorSerializer
from accessgov.api.views import TokenAPIView
from accessgov.connectors.webhook import verify
from accessgov.models import ApiToken, System
from accessgov.services import activity as services
from accessgov.services.events import acting_via

MAX_RECORDS = 50_000
_SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,100}$")
SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines")


class ActivityIngestSerializer(serializers.Serializer):
    """The JSON form (documentation only: the view parses the body itself, under its size limit)."""

    system = serializers.SlugField(help_text="The system the activity happened on.")
    records = serializers.ListField(
        child=serializers.DictField(),
        max_length=MAX_RECORDS,
        help_text='PostgreSQL jsonlog entries, or {"type": "statement" | "session", "at", "principal" | "grant_id", '
        '"statement", "session_id", "client_address", "application", "database", "ended_at", "rows", "id"}.',
    )
    batch_id = serializers.CharField(required=False, max_length=200, help_text="Stored once, however often sent.")


class ActivityIngestResultSerializer(serializers.Serializer):
    received = serializers.IntegerField()
    stored = serializers.IntegerField()
    duplicates = serializers.IntegerField(help_text="Records seen before (same id or log line).")
    ignored = serializers.IntegerField(help_text="Lines that are not activity of a person's login (not stored).")
    attributed = serializers.IntegerField(help_text="Stored rows attributed to a grant.")
    without_grant = serializers.IntegerField(help_text="Stored rows of a login without a grant (findings).")
    findings_raised = serializers.IntegerField()
    duplicate = serializers.BooleanField(help_text="The whole batch had been received before.")


class SignedSourceThrottle(SimpleRateThrottle):
    """Signed requests have no token: count them per system (API_THROTTLE_RATE, like tokens)."""

    scope = "activity_signed"

    def get_rate(self) -> str:
        return settings.API_THROTTLE_RATE

    def get_cache_key(self, request, view) -> str | None:
        if isinstance(request.auth, ApiToken):
            return None
        slug = request.query_params.get("system", "")[:100] or "body"
        return f"throttle_activity_signed_{slug}"


class ActivityIngestView(TokenAPIView):
    """Thin: authenticate (token or signature), find the system, call ``services.activity_ingest_push``."""

    required_scopes = {"POST": ApiToken.Scope.ACTIVITY_WRITE}
    serializer_class = ActivityIngestSerializer  # for the schema; the body is parsed by the view
    permission_classes = []  # a token needs its scope (checked below); a signature needs no token
    throttle_classes = [*TokenAPIView.throttle_classes, SignedSourceThrottle]
    query_parameters = {
        "POST": [
            OpenApiParameter("system", str, description="The system's slug (JSON lines bodies)."),
            OpenApiParameter("batch_id", str, description="The batch's id (JSON lines bodies)."),
        ]
    }

    def check_permissions(self, request):
        super().check_permissions(request)
        # Before anything else (a wrong method and the query string included): a token, or a signature to check.
        if not isinstance(request.auth, ApiToken) and not all(request.headers.get(h) for h in SIGNATURE_HEADERS):
            raise NotAuthenticated("Send a service token (Bearer) or a Standard Webhooks signature.")

    @extend_schema(
        operation_id="activity_ingest",
        summary="Report activity at a target (log shippers, target tooling; service tokens or signatures)",
        request={"application/json": ActivityIngestSerializer, "application/x-ndjson": OpenApiTypes.STR},
        responses={
            200: ActivityIngestResultSerializer,
            413: OpenApiResponse(ErrorSerializer, description="The body is larger than ACTIVITY_INGEST_MAX_BYTES"),
            415: OpenApiResponse(ErrorSerializer, description="Neither JSON nor JSON lines"),
        },
    )
    def post(self, request):
        token = request.auth if isinstance(request.auth, ApiToken) else None
        if token is not None and not token.allows(ApiToken.Scope.ACTIVITY_WRITE):
            raise PermissionDenied(f"This token does not have the {ApiToken.Scope.ACTIVITY_WRITE} scope.")
        body = self._body(request)
        slug, records, batch_id = self._parse(request, body)
        system = System.objects.filter(slug=slug).first()
        if token is not None:
            role_ids = list(token.roles.values_list("pk", flat=True))
            if system is None:
                raise Http404
            problem = permissions.activity_report_problem(request.user, role_ids, system)
            if problem:
                raise PermissionDenied(problem)
            via, message_id = f"api token #{token.pk}", batch_id
        else:
            headers = {h: request.headers.get(h, "") for h in SIGNATURE_HEADERS}
            if (
                system is None
                or system.connector != System.Connector.WEBHOOK
                or not system.connector_secret
                or not verify(system.connector_secret, headers, body)
            ):
                # One answer for every failure: no oracle for which systems exist or sign.
                raise AuthenticationFailed("The signature does not verify (or is stale).", code="signature_invalid")
            # The batch's own id when it has one (a sender that re-signs a batch gives it a new webhook-id);
            # else the webhook-id, which a replay of the same signed request repeats.
            via, message_id = "signature", batch_id or headers["webhook-id"][:200]
            self._attribution.enter_context(acting_via({"signed_by": f"system:{system.slug}"}))
        result, duplicate = services.activity_ingest_push(
            system, records, message_id=message_id or None, via=via, now=clock.now()
        )
        return Response({**result.as_dict(), "duplicate": duplicate}, status=status.HTTP_200_OK)

    def _body(self, request) -> bytes:
        limit = settings.ACTIVITY_INGEST_MAX_BYTES
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if not inputs.ascii_digits(declared) or int(declared) > limit:
            return self._too_large(limit)
        # Read the stream ourselves: Django's request.body would refuse anything over 2.5 MB.
        body = request._request.read(limit + 1)
        if len(body) > limit:
            return self._too_large(limit)
        return body

    def _too_large(self, limit: int):
        raise _TooLarge(f"The body is larger than {limit} bytes: send smaller batches.")

    def _parse(self, request, body: bytes) -> tuple[str, list, str]:
        content_type = (request.content_type or "").split(";")[0].strip().lower()
        if content_type in NDJSON_TYPES:
            slug = request.query_params.get("system", "")
            records = []
            for number, line in enumerate(body.split(b"\n"), start=1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line, object_pairs_hook=inputs.json_object_once_per_key))
                except inputs.KeyTwice as exc:
                    raise ParseError(f"Line {number}: {exc}.") from exc
                except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                    raise ParseError(f"Line {number} is not JSON.") from exc
            batch_id = request.query_params.get("batch_id", "")
        elif content_type == "application/json":
            try:
                document = json.loads(body, object_pairs_hook=inputs.json_object_once_per_key)
            except inputs.KeyTwice as exc:
                raise ParseError(f"The body is not JSON to act on: {exc}.") from exc
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                raise ParseError("The body is not JSON.") from exc
            if not isinstance(document, dict) or set(document) - {"system", "records", "batch_id"}:
                raise ParseError('Send {"system": "<slug>", "records": [...], "batch_id": "…"}.')
            slug, records, batch_id = document.get("system"), document.get("records"), document.get("batch_id", "")
            if not isinstance(records, list):
                raise ParseError('"records" is a list of records.')
            if not isinstance(batch_id, str):
                raise ParseError('"batch_id" is text.')
        else:
            raise UnsupportedMediaType(content_type or "none")
        if not isinstance(slug, str) or not _SLUG.match(slug):
            raise ParseError("Name the system by its slug (system).")
        if len(records) > MAX_RECORDS:
            raise _TooLarge(f"At most {MAX_RECORDS} records per batch.")
        if len(batch_id) > 200 or "\x00" in batch_id:
            raise ParseError("batch_id is at most 200 characters.")
        # Nesting past the documented 32 levels, or a batch id no database can compare, is the sender's error (a
        # 400, nothing stored); observed text with a NUL or an unpaired surrogate is kept, as U+FFFD (logs.clean).
        if (problem := inputs.json_problem(records, texts=False) or inputs.text_problem(batch_id)) is not None:
            raise ParseError(f"The batch cannot be stored: {problem}.")
        return slug, records, batch_id


class _TooLarge(ParseError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"
