"""API views: thin, like the page views. Each authenticates a token, checks its scope, finds the
object among those the caller may see (404 otherwise), calls the same service or selector the pages
call, and answers in the serializers' shape. Service errors become 400/403/409 (see api.errors)."""

from contextlib import ExitStack
from datetime import timedelta

from django.db.models import Prefetch, QuerySet
from django.http import FileResponse, Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotAuthenticated, ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from accessgov import clock, inputs, otp, permissions, selectors
from accessgov.api.authentication import BearerTokenAuthentication
from accessgov.api.pagination import PAGE_SIZE_PARAMETER, KeysetPagination
from accessgov.api.permissions import TokenScope, limit_to_token_roles, token_allows_role
from accessgov.api.query import QueryParametersMixin
from accessgov.api.serializers import (
    AccessEventSerializer,
    AccessRequestCreateSerializer,
    AccessRequestSerializer,
    ApproveInputSerializer,
    DenyInputSerializer,
    EligibilitySerializer,
    EmptyInputSerializer,
    EvidencePackCreateSerializer,
    EvidencePackSerializer,
    ExtensionCreateSerializer,
    GrantSerializer,
    RoleSerializer,
    SystemSerializer,
)
from accessgov.api.throttling import TokenRateThrottle
from accessgov.evidence import builder as evidence_builder
from accessgov.exceptions import NotAuthorized, PolicyViolation, TransitionNotAllowed
from accessgov.models import AccessEvent, AccessRequest, ApiToken, Decision, EvidencePack, Grant, Role, System
from accessgov.services import access_requests as request_services
from accessgov.services import evidence as evidence_services
from accessgov.services import grants as grant_services
from accessgov.services import tokens as token_services
from accessgov.services.events import acting_via

Scope = ApiToken.Scope
STATUS_PARAMETER = OpenApiParameter("status", str, description="Only objects in this state.")


class TokenAPIView(QueryParametersMixin, GenericAPIView):
    """Base of every /api/v1/ view: token authentication, the scope each method needs
    (``required_scopes``), per-token throttling, the query parameters each method reads and no other
    (``query_parameters``, api.query), keyset pagination on the lists that set ``pagination_class``, and
    attribution: every access event written while the view runs names the token (``data["via"]``), and
    model changes name the token's user."""

    authentication_classes = [BearerTokenAuthentication]
    permission_classes = [TokenScope]
    throttle_classes = [TokenRateThrottle]
    pagination_class = None  # lists set KeysetPagination: its cursor and page_size are a list's parameters
    metadata_class = None  # OPTIONS answers 405: the schema describes the API
    required_scopes: dict[str, str] = {}

    def dispatch(self, request, *args, **kwargs):
        self._attribution = ExitStack()
        with self._attribution:
            return super().dispatch(request, *args, **kwargs)

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if isinstance(request.auth, ApiToken):
            self._attribution.enter_context(acting_via(token_services.token_label(request.auth)))
            _attribute_model_changes(request.user)

    def check_permissions(self, request):
        # Count the call before the scope check (DRF's order is the other way round), so calls
        # refused for a missing scope count towards the token's limit too.
        super().check_throttles(request)
        super().check_permissions(request)

    def check_throttles(self, request):
        """Done in check_permissions, before the scope check."""

    @property
    def token(self) -> ApiToken:
        return self.request.auth

    @property
    def client_address(self) -> str | None:
        return getattr(self.request._request, "client_address", None)

    def page(self, queryset: QuerySet, serializer_class, **context):
        page = self.paginate_queryset(queryset)
        data = serializer_class(page, many=True, context={"request": self.request, **context}).data
        return self.get_paginated_response(data)


def _attribute_model_changes(user) -> None:
    """django-auditlog's middleware ran before the token was known (no session user): name the
    token's user as the actor of the model changes this request makes."""
    from auditlog.context import auditlog_value

    context = auditlog_value.get(None)
    if context is not None and context.get("actor") is None:
        context["actor"] = user


def _invalid_parameter(name: str, message: str) -> ValidationError:
    """A bad query parameter: 400 ``invalid`` with ``fields`` naming it, as a bad page_size or cursor is
    (``policy_violation`` is for a role's policy)."""
    return ValidationError({name: [message]})


def _status_value(value: str | None, choices) -> str | None:
    if value is not None and value not in choices:
        raise _invalid_parameter("status", f"Unknown status {value[:50]!r}; one of: {', '.join(choices)}.")
    return value


def _boolean_parameter(request, name: str) -> bool | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    if value not in ("true", "false"):
        raise _invalid_parameter(name, f"{name} is true or false.")
    return value == "true"


def _requests_queryset() -> QuerySet[AccessRequest]:
    return AccessRequest.objects.select_related("role__system", "requester", "grant", "extends_grant").prefetch_related(
        Prefetch("decisions", queryset=Decision.objects.select_related("approver"))
    )


# --- Requests ------------------------------------------------------------------------------------


class AccessRequestListView(TokenAPIView):
    required_scopes = {"GET": Scope.REQUESTS_READ, "POST": Scope.REQUESTS_CREATE}
    query_parameters = {"GET": [STATUS_PARAMETER]}
    pagination_class = KeysetPagination

    @extend_schema(
        operation_id="requests_list",
        summary="My requests, newest first",
        responses=AccessRequestSerializer(many=True),
    )
    def get(self, request):
        qs = _requests_queryset().filter(requester=request.user)
        # What each request is now (a pending one past its deadline is lapsed), as AccessRequestSerializer shows it.
        if status := _status_value(request.query_params.get("status"), AccessRequest.Status.values):
            qs = qs.with_status_at(status, clock.now())
        return self.page(limit_to_token_roles(qs, self.token), AccessRequestSerializer)

    @extend_schema(
        operation_id="requests_create",
        summary="Request access to a role",
        request=AccessRequestCreateSerializer,
        responses={201: AccessRequestSerializer},
    )
    def post(self, request):
        data = _valid(AccessRequestCreateSerializer, request)
        role = self._role(data)
        access_request = request_services.access_request_submit(
            request.user,
            role=role,
            duration=timedelta(seconds=data["duration_seconds"]),
            justification=data["justification"],
            ticket=data["ticket"],
            starts_at=data["starts_at"],
            client_address=self.client_address,
        )
        return Response(
            AccessRequestSerializer(_requests_queryset().get(pk=access_request.pk)).data,
            status=status.HTTP_201_CREATED,
        )

    def _role(self, data) -> Role:
        """The role named by id or path, among the roles in the caller's catalogue (else 400: the
        body named something the caller cannot use, which is input, not a URL)."""
        roles = permissions.visible_roles(self.request.user, clock.now()).select_related("system")
        if "role_id" in data:
            role = roles.filter(pk=data["role_id"]).first()
        else:
            slug, _, name = data["role"].partition("/")
            role = roles.filter(system__slug=slug, name=name).first()
        if role is None or not token_allows_role(self.token, role.pk):
            raise PolicyViolation("No such role among the roles you may request.")
        return role


def _valid(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _visible_request(view: TokenAPIView, pk: int) -> AccessRequest:
    access_request = permissions.get_visible_access_request_or_404(view.request.user, pk, _requests_queryset())
    if not token_allows_role(view.token, access_request.role_id):
        raise Http404
    return access_request


class AccessRequestDetailView(TokenAPIView):
    required_scopes = {"GET": Scope.REQUESTS_READ}

    @extend_schema(operation_id="requests_retrieve", summary="A request I may see", responses=AccessRequestSerializer)
    def get(self, request, pk: int):
        return Response(AccessRequestSerializer(_visible_request(self, pk)).data)


class AccessRequestCancelView(TokenAPIView):
    required_scopes = {"POST": Scope.REQUESTS_CANCEL}

    @extend_schema(
        operation_id="requests_cancel",
        summary="Withdraw my pending request",
        request=EmptyInputSerializer,
        responses=AccessRequestSerializer,
    )
    def post(self, request, pk: int):
        _visible_request(self, pk)
        _valid(EmptyInputSerializer, request)
        request_services.access_request_cancel(request.user, pk, client_address=self.client_address)
        return Response(AccessRequestSerializer(_visible_request(self, pk)).data)


def _act_with_code(view: TokenAPIView, code: str | None, action):
    """Run ``action(step_up_at)`` with the code sent with the call spent last (``otp.act_spending_code_last``):
    every other rule is checked before the code is verified with the sign-in code path (each code works
    once, wrong codes are throttled). A token has no sign-in, so the code in the body is the only code
    the API knows: without one a role that needs step-up is refused by the service, by the same rule
    and in the same words as the pages (otp.ensure_step_up)."""
    if not code:
        return action(None)

    def spend_code():
        result = otp.verify_code(view.request.user, code, allow_backup=False)
        if not result.ok:
            otp.logger.warning(
                "otp failure step=api-step-up user=%s client=%s token=%s",
                view.request.user.pk,
                view.client_address,
                view.token.pk,
            )
            raise NotAuthorized(result.message)
        return clock.now()

    return otp.act_spending_code_last(action, code_at=None, spend_code=spend_code)


class AccessRequestApproveView(TokenAPIView):
    required_scopes = {"POST": Scope.DECISIONS_DECIDE}

    @extend_schema(
        operation_id="requests_approve",
        summary="Approve a request I may decide",
        request=ApproveInputSerializer,
        responses=AccessRequestSerializer,
    )
    def post(self, request, pk: int):
        access_request = _visible_request(self, pk)
        data = _valid(ApproveInputSerializer, request)
        permissions.ensure_can_decide_access_request(request.user, access_request)
        duration = data.get("duration_seconds")
        _act_with_code(
            self,
            data.get("otp_code"),
            lambda step_up_at: request_services.access_request_approve(
                request.user,
                pk,
                comment=data["comment"],
                duration=timedelta(seconds=duration) if duration else None,
                step_up_at=step_up_at,
                client_address=self.client_address,
            ),
        )
        return Response(AccessRequestSerializer(_visible_request(self, pk)).data)


class AccessRequestDenyView(TokenAPIView):
    required_scopes = {"POST": Scope.DECISIONS_DECIDE}

    @extend_schema(
        operation_id="requests_deny",
        summary="Deny a request I may decide (comment required)",
        request=DenyInputSerializer,
        responses=AccessRequestSerializer,
    )
    def post(self, request, pk: int):
        access_request = _visible_request(self, pk)
        data = _valid(DenyInputSerializer, request)
        permissions.ensure_can_decide_access_request(request.user, access_request)
        _act_with_code(
            self,
            data.get("otp_code"),
            lambda step_up_at: request_services.access_request_deny(
                request.user, pk, comment=data["comment"], step_up_at=step_up_at, client_address=self.client_address
            ),
        )
        return Response(AccessRequestSerializer(_visible_request(self, pk)).data)


class DecisionQueueView(TokenAPIView):
    required_scopes = {"GET": Scope.DECISIONS_READ}
    query_parameters = {"GET": [PAGE_SIZE_PARAMETER]}

    @extend_schema(
        operation_id="decisions_list",
        summary="Pending requests I may decide, oldest first: one list of at most page_size (default 200)",
        responses=AccessRequestSerializer(many=True),
    )
    def get(self, request):
        # One list, not pages (what deciders and bots read), but ?page_size= means and is checked what it is
        # on every other list: one number from 1 to 200, else a 400.
        size = KeysetPagination().get_page_size(request, default=KeysetPagination.max_page_size)
        queue = selectors.approver_queue(request.user, clock.now()).prefetch_related(
            Prefetch("decisions", queryset=Decision.objects.select_related("approver"))
        )
        queue = limit_to_token_roles(queue, self.token)[:size]
        return Response(AccessRequestSerializer(queue, many=True).data)


# --- Grants --------------------------------------------------------------------------------------


def _grants_queryset() -> QuerySet[Grant]:
    return Grant.objects.select_related("role__system", "user")


class GrantListView(TokenAPIView):
    required_scopes = {"GET": Scope.GRANTS_READ}
    query_parameters = {
        "GET": [
            STATUS_PARAMETER,
            OpenApiParameter("active", bool, description="Only grants that give access right now."),
        ]
    }
    pagination_class = KeysetPagination

    @extend_schema(
        operation_id="grants_list",
        summary="My grants, newest first",
        responses=GrantSerializer(many=True),
    )
    def get(self, request):
        now = clock.now()
        qs = _grants_queryset().filter(user=request.user)
        # What each grant is now (an expiry not yet swept is expired), as GrantSerializer shows it.
        if status := _status_value(request.query_params.get("status"), Grant.Status.values):
            qs = qs.with_status_at(status, now)
        active = _boolean_parameter(request, "active")
        if active is not None:
            giving_access = Grant.objects.active(now).values("pk")
            qs = qs.filter(pk__in=giving_access) if active else qs.exclude(pk__in=giving_access)
        return self.page(limit_to_token_roles(qs, self.token), GrantSerializer)


def _visible_grant(view: TokenAPIView, pk: int) -> Grant:
    grant = permissions.get_visible_grant_or_404(view.request.user, pk)
    if not token_allows_role(view.token, grant.role_id):
        raise Http404
    return grant


class GrantDetailView(TokenAPIView):
    required_scopes = {"GET": Scope.GRANTS_READ}

    @extend_schema(operation_id="grants_retrieve", summary="A grant I may see", responses=GrantSerializer)
    def get(self, request, pk: int):
        return Response(GrantSerializer(_visible_grant(self, pk)).data)


class GrantReleaseView(TokenAPIView):
    required_scopes = {"POST": Scope.GRANTS_RELEASE}

    @extend_schema(
        operation_id="grants_release",
        summary="Give my access back early",
        request=EmptyInputSerializer,
        responses=GrantSerializer,
    )
    def post(self, request, pk: int):
        _visible_grant(self, pk)
        _valid(EmptyInputSerializer, request)
        grant_services.grant_release(request.user, pk, client_address=self.client_address)
        return Response(GrantSerializer(_visible_grant(self, pk)).data)


class GrantExtendView(TokenAPIView):
    """Ask to extend my grant, as the portal's extend form does (the same service and rules): only the
    holder, only active access, never break-glass, bounded by the role's maximum, approved as the
    role's policy says. Needs the scope that creates requests: an extension is a request."""

    required_scopes = {"POST": Scope.REQUESTS_CREATE}

    @extend_schema(
        operation_id="grants_extend",
        summary="Ask to extend my grant (auto-approved extensions answer with the grant's new end)",
        request=ExtensionCreateSerializer,
        responses={201: AccessRequestSerializer},
    )
    def post(self, request, pk: int):
        grant = _visible_grant(self, pk)
        if not permissions.can_release_grant(request.user, grant):
            raise NotAuthorized("Only the person who holds a grant can ask to extend it.")
        data = _valid(ExtensionCreateSerializer, request)
        extension = request_services.access_request_submit_extension(
            request.user,
            grant_id=grant.pk,
            duration=timedelta(seconds=data["duration_seconds"]),
            justification=data["justification"],
            ticket=data["ticket"],
            client_address=self.client_address,
        )
        return Response(
            AccessRequestSerializer(_requests_queryset().get(pk=extension.pk)).data, status=status.HTTP_201_CREATED
        )


# --- The token itself ------------------------------------------------------------------------------


class CurrentTokenView(TokenAPIView):
    """What the calling token is and until when (no scope needed: any token may read itself), so a
    client can stop waiting before its token expires."""

    required_scopes = {}

    @extend_schema(
        operation_id="token_retrieve",
        summary="The token making this call: its kind, scopes, roles and expiry",
        responses=inline_serializer(
            "CurrentToken",
            {
                "id": serializers.IntegerField(),
                "name": serializers.CharField(),
                "kind": serializers.ChoiceField(choices=ApiToken.Kind.choices),
                "user": serializers.CharField(),
                "scopes": serializers.ListField(child=serializers.CharField()),
                "roles": serializers.ListField(child=serializers.CharField(), help_text="Empty: not limited."),
                "expires_at": serializers.DateTimeField(),
                "expires_in_seconds": serializers.IntegerField(
                    min_value=0, help_text="Seconds from the server's clock: immune to the client's clock."
                ),
            },
        ),
    )
    def get(self, request):
        token = self.token
        return Response(
            {
                "id": token.pk,
                "name": token.name,
                "kind": token.kind,
                "user": request.user.get_username(),
                "scopes": list(token.scopes),
                "roles": [f"{r.system.slug}/{r.name}" for r in token.roles.select_related("system").order_by("pk")],
                "expires_at": serializers.DateTimeField().to_representation(token.expires_at),
                "expires_in_seconds": max(0, int((token.expires_at - clock.now()).total_seconds())),
            }
        )


# --- Catalogue -----------------------------------------------------------------------------------


class SystemListView(TokenAPIView):
    required_scopes = {"GET": Scope.CATALOG_READ}
    pagination_class = KeysetPagination

    @extend_schema(
        operation_id="systems_list", summary="Systems in my catalogue", responses=SystemSerializer(many=True)
    )
    def get(self, request):
        systems = permissions.visible_systems(request.user, clock.now())
        role_ids = list(self.token.roles.values_list("pk", flat=True))
        if role_ids:
            systems = systems.filter(roles__in=role_ids).distinct()
        return self.page(systems, SystemSerializer)


class RoleListView(TokenAPIView):
    required_scopes = {"GET": Scope.CATALOG_READ}
    query_parameters = {
        "GET": [
            OpenApiParameter("system", str, description="Only roles of the system with this slug."),
            OpenApiParameter("eligible", bool, description="Only roles I may request now."),
        ]
    }
    pagination_class = KeysetPagination

    @extend_schema(
        operation_id="roles_list",
        summary="Roles in my catalogue, with their policy",
        responses=RoleSerializer(many=True),
    )
    def get(self, request):
        now = clock.now()
        roles = limit_to_token_roles(
            permissions.visible_roles(request.user, now).select_related("system"), self.token, field="pk"
        )
        eligible_ids = set(permissions.eligible_roles(request.user, now).values_list("pk", flat=True))
        if system := request.query_params.get("system"):
            roles = roles.filter(system__slug=system)
        eligible = _boolean_parameter(request, "eligible")
        if eligible is not None:
            roles = roles.filter(pk__in=eligible_ids) if eligible else roles.exclude(pk__in=eligible_ids)
        return self.page(roles, RoleSerializer, eligible_role_ids=eligible_ids)


class RoleDetailView(TokenAPIView):
    required_scopes = {"GET": Scope.CATALOG_READ}

    @extend_schema(operation_id="roles_retrieve", summary="A role in my catalogue", responses=RoleSerializer)
    def get(self, request, pk: int):
        now = clock.now()
        role = permissions.visible_roles(request.user, now).select_related("system").filter(pk=pk).first()
        if role is None or not token_allows_role(self.token, role.pk):
            raise Http404
        eligible_ids = set(permissions.eligible_roles(request.user, now).values_list("pk", flat=True))
        return Response(RoleSerializer(role, context={"eligible_role_ids": eligible_ids}).data)


class EligibilityListView(TokenAPIView):
    required_scopes = {"GET": Scope.CATALOG_READ}
    pagination_class = KeysetPagination

    @extend_schema(
        operation_id="eligibility_list",
        summary="Eligibility in force that concerns me (all of it on systems I own)",
        responses=EligibilitySerializer(many=True),
    )
    def get(self, request):
        qs = permissions.visible_eligibilities(request.user, clock.now()).select_related(
            "role__system", "user", "group"
        )
        return self.page(limit_to_token_roles(qs, self.token), EligibilitySerializer)


# --- Access events (auditors) --------------------------------------------------------------------


class AccessEventListView(TokenAPIView):
    required_scopes = {"GET": Scope.EVENTS_READ}
    query_parameters = {
        "GET": [
            OpenApiParameter("event_type", str, description="e.g. request.approved"),
            OpenApiParameter("access_request", int),
            OpenApiParameter("grant", int),
        ]
    }
    pagination_class = KeysetPagination

    @extend_schema(
        operation_id="events_list",
        summary="The access event ledger, newest first (auditors)",
        responses=AccessEventSerializer(many=True),
    )
    def get(self, request):
        if not permissions.is_auditor(request.user):
            raise NotAuthorized("Only auditors read the access event ledger.")
        qs = AccessEvent.objects.all()
        params = request.query_params
        if event_type := params.get("event_type"):
            qs = qs.filter(event_type=event_type)
        for name in ("access_request", "grant"):
            if (value := params.get(name)) is not None:
                if (object_id := inputs.parse_id(value)) is None:
                    raise _invalid_parameter(name, f"{name} is an id: a whole number written with the digits 0-9.")
                qs = qs.filter(**{f"{name}_id": object_id})
        return self.page(limit_to_token_roles(qs, self.token), AccessEventSerializer)


# --- Evidence packs (auditors) --------------------------------------------------------------------


def _auditor_pack(request, pk: int) -> EvidencePack:
    if not permissions.can_build_evidence_pack(request.user):
        raise Http404
    pack = EvidencePack.objects.prefetch_related("systems").select_related("requested_by").filter(pk=pk).first()
    if pack is None:
        raise Http404
    return pack


class EvidencePackListView(TokenAPIView):
    required_scopes = {"GET": Scope.EVIDENCE_READ, "POST": Scope.EVIDENCE_BUILD}
    pagination_class = KeysetPagination

    @extend_schema(
        operation_id="evidence_packs_list",
        summary="Evidence packs, newest first (auditors)",
        responses=EvidencePackSerializer(many=True),
    )
    def get(self, request):
        permissions.ensure_can_build_evidence_pack(request.user)
        packs = EvidencePack.objects.prefetch_related("systems").select_related("requested_by")
        return self.page(packs, EvidencePackSerializer)

    @extend_schema(
        operation_id="evidence_packs_create",
        summary="Build an evidence pack for a period (auditors); poll it until status is ready",
        request=EvidencePackCreateSerializer,
        responses={202: EvidencePackSerializer},
    )
    def post(self, request):
        data = _valid(EvidencePackCreateSerializer, request)
        slugs = data.get("systems") or []
        systems = list(System.objects.filter(slug__in=slugs))
        unknown = sorted(set(slugs) - {s.slug for s in systems})
        if unknown:
            raise PolicyViolation(f"Unknown systems: {', '.join(unknown)[:200]}.")
        pack = evidence_services.evidence_pack_request(
            request.user, since=data["since"], until=data["until"], systems=systems, client_address=self.client_address
        )
        pack = _auditor_pack(request, pack.pk)
        return Response(EvidencePackSerializer(pack).data, status=status.HTTP_202_ACCEPTED)


class EvidencePackDetailView(TokenAPIView):
    required_scopes = {"GET": Scope.EVIDENCE_READ}

    @extend_schema(operation_id="evidence_packs_retrieve", responses=EvidencePackSerializer)
    def get(self, request, pk: int):
        return Response(EvidencePackSerializer(_auditor_pack(request, pk)).data)


class EvidencePackDownloadView(TokenAPIView):
    required_scopes = {"GET": Scope.EVIDENCE_READ}

    @extend_schema(
        operation_id="evidence_packs_download",
        summary="The pack's ZIP file (recorded in the ledger)",
        responses={(200, "application/zip"): bytes},
    )
    def get(self, request, pk: int):
        pack = _auditor_pack(request, pk)
        path = evidence_builder.evidence_dir() / pack.file_name if pack.file_name else None
        if pack.status != EvidencePack.Status.READY or path is None or not path.is_file():
            raise TransitionNotAllowed("This pack is not ready to download.")
        evidence_services.evidence_pack_record_download(request.user, pack, client_address=self.client_address)
        return FileResponse(
            path.open("rb"), as_attachment=True, filename=pack.file_name, content_type="application/zip"
        )


class ApiNotFoundView(TokenAPIView):
    """Unknown paths under /api/v1/: 401 without a token, a JSON 404 with one."""

    required_scopes = {}
    permission_classes = []

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if not isinstance(request.auth, ApiToken):
            raise NotAuthenticated
        raise Http404

    def check_query_parameters(self, request) -> None:
        """No such path: a 401 or 404 whatever its query string."""

    @extend_schema(exclude=True)
    def get(self, request, rest: str):
        raise Http404
