"""The SCIM 2.0 endpoint an identity provider's provisioning client calls (``/scim/v2/``).

Authenticated by a service token with the ``scim:provision`` scope, of the service account an identity
provider with SCIM switched on names as its SCIM client (``permissions.scim_provider_for_token``):
the provider — the "tenant" — comes from the token, and every id of another provider's users or
groups answers 404 exactly like an id that does not exist. Thin views: read and check the body
(``identity.scim``), call one service (``services.identity``) inside ``acting_via`` so every event
names the token, answer SCIM JSON. Errors are SCIM errors (RFC 7644 3.12), never a 5xx for bad input.
"""

import logging
import uuid
from collections import defaultdict
from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path, reverse
from django.views.decorators.csrf import csrf_exempt

from accessgov import permissions
from accessgov.exceptions import AccessGovError, NotAuthorized, PolicyViolation, TransitionNotAllowed
from accessgov.identity import scim
from accessgov.identity.scim import ScimError
from accessgov.models import ExternalIdentity, IdentityGroup, IdentityProvider, User
from accessgov.services import identity as identity_services
from accessgov.services import tokens as token_services
from accessgov.services.events import acting_via

logger = logging.getLogger("accessgov.security")

app_name = "scim"


def _answer(body: dict, status: int = 200, location: str | None = None) -> HttpResponse:
    response = JsonResponse(
        body, status=status, content_type=scim.CONTENT_TYPE, json_dumps_params={"ensure_ascii": False}
    )
    if location:
        response["Location"] = location
    return response


def _error(error: ScimError) -> HttpResponse:
    response = _answer(error.body(), status=error.status)
    if error.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="accessgov-scim"'
    return response


def _authenticate(request: HttpRequest):
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip() or " " in secret.strip():
        raise ScimError(401, "Send the SCIM token: Authorization: Bearer agv_s_…")
    result = token_services.api_token_authenticate(
        secret.strip(), client_address=getattr(request, "client_address", None)
    )
    if result.token is None:
        raise ScimError(401, result.message)
    provider = permissions.scim_provider_for_token(result.token)
    if provider is None:
        raise ScimError(403, "This token may not provision users: it is not an identity provider's SCIM token.")
    return provider, result.token


def scim_endpoint(methods: set[str]):
    """Authenticate, allow ``methods``, map service errors to SCIM errors, record the token as ``via``."""

    def decorate(view: Callable) -> Callable:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            try:
                provider, token = _authenticate(request)
                if request.method not in methods:
                    raise ScimError(405, f"{request.method} is not supported here.")
                with acting_via({**token_services.token_label(token), "scim": provider.slug}):
                    return view(request, provider, token.user, *args, **kwargs)
            except ScimError as error:
                return _error(error)
            except identity_services.NotFound as error:
                return _error(ScimError(404, str(error)))
            except identity_services.Conflict as error:
                return _error(ScimError(409, str(error), "uniqueness"))
            except identity_services.Immutable as error:
                return _error(ScimError(400, str(error), "mutability"))
            except TransitionNotAllowed as error:
                return _error(ScimError(409, str(error)))
            except NotAuthorized as error:
                return _error(ScimError(403, str(error)))
            except PolicyViolation as error:
                return _error(ScimError(400, str(error), "invalidValue"))
            except AccessGovError as error:
                return _error(ScimError(400, str(error)))

        return wrapper

    return decorate


def _body(request: HttpRequest) -> dict:
    content_type = request.content_type or ""
    if content_type and content_type not in ("application/scim+json", "application/json"):
        raise ScimError(415, "Send application/scim+json.")
    try:
        length = int(request.headers.get("Content-Length") or 0)
    except ValueError as error:
        raise ScimError(400, "Bad Content-Length.", "invalidSyntax") from error
    if length > settings.SCIM_MAX_BODY_BYTES:
        raise ScimError(413, f"The body is larger than {settings.SCIM_MAX_BODY_BYTES} bytes.")
    return scim.load_body(request.body)


def _client(request: HttpRequest) -> str | None:
    return getattr(request, "client_address", None)


# --- Representation ---------------------------------------------------------------------------------


def _meta(request: HttpRequest, kind: str, obj, scim_id) -> dict:
    return {
        "resourceType": kind,
        "created": obj.created_at.isoformat(),
        "lastModified": obj.updated_at.isoformat(),
        "location": request.build_absolute_uri(reverse(f"scim:{kind.lower()}", args=[scim_id])),
    }


def _user_resource(request: HttpRequest, identity: ExternalIdentity, groups: list[dict]) -> dict:
    user = identity.user
    resource = {
        "schemas": [scim.SCHEMA_USER],
        "id": str(identity.scim_id),
        "userName": identity.scim_user_name,
        "name": {"givenName": user.first_name, "familyName": user.last_name},
        "displayName": user.get_full_name() or user.username,
        "active": user.is_active,
        "emails": [{"value": user.email, "type": "work", "primary": True}] if user.email else [],
        "groups": groups,
        "meta": _meta(request, "User", identity, identity.scim_id),
    }
    if identity.subject:
        resource["externalId"] = identity.subject
    return resource


def _groups_of(provider: IdentityProvider, user_ids: list[int]) -> dict[int, list[dict]]:
    found = defaultdict(list)
    rows = IdentityGroup.objects.filter(provider=provider, group__user__in=user_ids).values_list(
        "group__user", "scim_id", "display_name"
    )
    for user_id, scim_id, name in rows:
        found[user_id].append({"value": str(scim_id), "display": name})
    return found


def _group_resource(request: HttpRequest, identity_group: IdentityGroup, members: list[dict] | None) -> dict:
    resource = {
        "schemas": [scim.SCHEMA_GROUP],
        "id": str(identity_group.scim_id),
        "displayName": identity_group.display_name,
        "meta": _meta(request, "Group", identity_group, identity_group.scim_id),
    }
    if identity_group.external_id:
        resource["externalId"] = identity_group.external_id
    if members is not None:
        resource["members"] = members
    return resource


def _members_of(provider: IdentityProvider, group_ids: list[int]) -> dict[int, list[dict]]:
    found = defaultdict(list)
    rows = (
        ExternalIdentity.objects.filter(provider=provider, user__groups__in=group_ids)
        .order_by("user_name")
        .values_list("user__groups", "scim_id", "user_name")
    )
    for group_id, scim_id, name in rows:
        found[group_id].append({"value": str(scim_id), "display": name})
    return found


def _list(resources: list[dict], total: int, start: int) -> HttpResponse:
    return _answer(
        {
            "schemas": [scim.SCHEMA_LIST],
            "totalResults": total,
            "startIndex": start,
            "itemsPerPage": len(resources),
            "Resources": resources,
        }
    )


def _excludes_members(request: HttpRequest) -> bool:
    excluded = {a.strip().lower() for a in request.GET.get("excludedAttributes", "").split(",")}
    return "members" in excluded


# --- Users ----------------------------------------------------------------------------------------


@scim_endpoint({"GET", "POST"})
def users_view(request: HttpRequest, provider: IdentityProvider, actor: User) -> HttpResponse:
    if request.method == "POST":
        identity = identity_services.scim_user_create(
            actor, provider, scim.user_from_resource(_body(request)), client_address=_client(request)
        )
        resource = _user_resource(request, identity, [])
        return _answer(resource, status=201, location=resource["meta"]["location"])
    found = scim.parse_filter(request.GET.get("filter"), scim.USER_FILTERS)
    start, count = scim.page(request.GET)
    identities = ExternalIdentity.objects.filter(provider=provider).select_related("user")
    if found is not None:
        what, value = found
        if what == "id":
            try:
                identities = identities.filter(scim_id=uuid.UUID(value))
            except ValueError:
                identities = identities.none()
        elif what == "user_name":
            identities = identities.with_scim_user_name(value)
        elif what == "external_id":
            identities = identities.filter(subject=value)
        else:
            identities = identities.filter(user__email__iexact=value)
    total = identities.count()
    chosen = list(identities.order_by("created_at", "pk")[start - 1 : start - 1 + count]) if count else []
    groups = _groups_of(provider, [i.user_id for i in chosen])
    return _list([_user_resource(request, i, groups.get(i.user_id, [])) for i in chosen], total, start)


@scim_endpoint({"GET", "PUT", "PATCH", "DELETE"})
def user_view(request: HttpRequest, provider: IdentityProvider, actor: User, scim_id: str) -> HttpResponse:
    if request.method == "DELETE":
        identity_services.scim_user_delete(actor, provider, scim_id, client_address=_client(request))
        return HttpResponse(status=204)
    if request.method == "PUT":
        identity = identity_services.scim_user_update(
            actor, provider, scim_id, scim.user_from_resource(_body(request)), client_address=_client(request)
        )
    elif request.method == "PATCH":
        body = _body(request)
        identity = identity_services.scim_user_update(
            actor,
            provider,
            scim_id,
            patch=lambda current: scim.user_apply_patch(current, body),
            client_address=_client(request),
        )
    else:
        try:
            identity = (
                ExternalIdentity.objects.select_related("user")
                .filter(provider=provider, scim_id=uuid.UUID(scim_id))
                .first()
            )
        except ValueError:
            identity = None
        if identity is None:
            raise ScimError(404, "No such user.")
    resource = _user_resource(request, identity, _groups_of(provider, [identity.user_id]).get(identity.user_id, []))
    return _answer(resource, location=resource["meta"]["location"])


# --- Groups ---------------------------------------------------------------------------------------


@scim_endpoint({"GET", "POST"})
def groups_view(request: HttpRequest, provider: IdentityProvider, actor: User) -> HttpResponse:
    if request.method == "POST":
        identity_group = identity_services.scim_group_create(
            actor, provider, scim.group_from_resource(_body(request)), client_address=_client(request)
        )
        members = _members_of(provider, [identity_group.group_id]).get(identity_group.group_id, [])
        resource = _group_resource(request, identity_group, members)
        return _answer(resource, status=201, location=resource["meta"]["location"])
    found = scim.parse_filter(request.GET.get("filter"), scim.GROUP_FILTERS)
    start, count = scim.page(request.GET)
    groups = IdentityGroup.objects.filter(provider=provider)
    if found is not None:
        what, value = found
        if what == "id":
            try:
                groups = groups.filter(scim_id=uuid.UUID(value))
            except ValueError:
                groups = groups.none()
        elif what == "display_name":
            groups = groups.filter(display_name__iexact=value)
        else:
            groups = groups.filter(external_id=value)
    total = groups.count()
    chosen = list(groups.order_by("created_at", "pk")[start - 1 : start - 1 + count]) if count else []
    members = None if _excludes_members(request) else _members_of(provider, [g.group_id for g in chosen])
    resources = [_group_resource(request, g, None if members is None else members.get(g.group_id, [])) for g in chosen]
    return _list(resources, total, start)


@scim_endpoint({"GET", "PUT", "PATCH", "DELETE"})
def group_view(request: HttpRequest, provider: IdentityProvider, actor: User, scim_id: str) -> HttpResponse:
    if request.method == "DELETE":
        identity_services.scim_group_delete(actor, provider, scim_id, client_address=_client(request))
        return HttpResponse(status=204)
    if request.method in ("PUT", "PATCH"):
        body = _body(request)
        if request.method == "PUT":
            values = scim.group_from_resource(body)
            change = scim.GroupChange(
                display_name=values.display_name,
                external_id=values.external_id,
                external_id_given=True,
                replace_members=set(values.members or ()),
            )
        else:
            change = scim.group_patch(body)
        identity_group = identity_services.scim_group_update(
            actor, provider, scim_id, change, client_address=_client(request)
        )
        if request.method == "PATCH" and not request.GET.get("attributes"):
            return HttpResponse(status=204)  # RFC 7644 3.5.2: 204 when no attributes were asked back
    else:
        try:
            identity_group = IdentityGroup.objects.filter(provider=provider, scim_id=uuid.UUID(scim_id)).first()
        except ValueError:
            identity_group = None
        if identity_group is None:
            raise ScimError(404, "No such group.")
    members = (
        None
        if _excludes_members(request)
        else _members_of(provider, [identity_group.group_id]).get(identity_group.group_id, [])
    )
    resource = _group_resource(request, identity_group, members)
    return _answer(resource, location=resource["meta"]["location"])


# --- Discovery (RFC 7644 4) -------------------------------------------------------------------------


@scim_endpoint({"GET"})
def service_provider_config_view(request: HttpRequest, provider: IdentityProvider, actor: User) -> HttpResponse:
    return _answer(
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "patch": {"supported": True},
            "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": True, "maxResults": scim.MAX_COUNT},
            "changePassword": {"supported": False},
            "sort": {"supported": False},
            "etag": {"supported": False},
            "authenticationSchemes": [
                {
                    "type": "oauthbearertoken",
                    "name": "Bearer token",
                    "description": "An AccessGov service token with the scim:provision scope",
                    "primary": True,
                }
            ],
            "meta": {"resourceType": "ServiceProviderConfig"},
        }
    )


RESOURCE_TYPE_URN = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
EXTERNAL_ID_DESCRIPTION = (
    "The provider's stable id for the person; the subject that signs in as the account. Set and changed by the "
    "provider for the people it created here. For an account linked at sign-in (its owner linked it on Account "
    "security, or it was created at first sign-in) it is the subject proven there, and a change is refused (400, "
    'scimType "mutability"): delete the user here to unlink it.'
)
EMAILS_DESCRIPTION = (
    "The person's addresses; the primary one is kept. For an account linked at sign-in its address is changed in "
    'AccessGov (a four-eyes change), and another address is refused (400, scimType "mutability").'
)
SCHEMA_URN = "urn:ietf:params:scim:schemas:core:2.0:Schema"
RESOURCE_TYPES = [
    {"id": "User", "name": "User", "endpoint": "/Users", "schema": scim.SCHEMA_USER},
    {"id": "Group", "name": "Group", "endpoint": "/Groups", "schema": scim.SCHEMA_GROUP},
]


@scim_endpoint({"GET"})
def resource_types_view(request: HttpRequest, provider: IdentityProvider, actor: User) -> HttpResponse:
    resources = [{"schemas": [RESOURCE_TYPE_URN], **r} for r in RESOURCE_TYPES]
    return _list(resources, len(resources), 1)


SCHEMAS = [
    {
        "id": scim.SCHEMA_USER,
        "name": "User",
        "attributes": [
            {"name": "userName", "type": "string", "required": True, "uniqueness": "server", "mutability": "readWrite"},
            {
                "name": "externalId",
                "type": "string",
                "required": False,
                "caseExact": True,
                "mutability": "readWrite",
                # RFC 7643 has no per-resource mutability: readWrite is true of the people the provider created,
                # and the description says which ones it is not (the 400 a client gets names them too).
                "description": EXTERNAL_ID_DESCRIPTION,
            },
            {"name": "name", "type": "complex", "required": False, "mutability": "readWrite"},
            {
                "name": "emails",
                "type": "complex",
                "multiValued": True,
                "required": False,
                "mutability": "readWrite",
                "description": EMAILS_DESCRIPTION,
            },
            {"name": "active", "type": "boolean", "required": False, "mutability": "readWrite"},
            {"name": "groups", "type": "complex", "multiValued": True, "mutability": "readOnly"},
        ],
    },
    {
        "id": scim.SCHEMA_GROUP,
        "name": "Group",
        "attributes": [
            {"name": "displayName", "type": "string", "required": True, "uniqueness": "server"},
            {"name": "externalId", "type": "string", "required": False, "caseExact": True},
            {"name": "members", "type": "complex", "multiValued": True, "required": False},
        ],
    },
]


@scim_endpoint({"GET"})
def schemas_view(request: HttpRequest, provider: IdentityProvider, actor: User) -> HttpResponse:
    resources = [{"schemas": [SCHEMA_URN], **s} for s in SCHEMAS]
    return _list(resources, len(resources), 1)


def _one_by_id(items: list[dict], wanted: str, urn: str, missing: str) -> HttpResponse:
    """One discovery resource by its id (RFC 7644 4), or a SCIM 404 saying ``missing``."""
    for item in items:
        if item["id"] == wanted:
            return _answer({"schemas": [urn], **item})
    raise ScimError(404, missing)


@scim_endpoint({"GET"})
def resource_type_view(request: HttpRequest, provider: IdentityProvider, actor: User, type_id: str) -> HttpResponse:
    """``/ResourceTypes/User``."""
    return _one_by_id(RESOURCE_TYPES, type_id, RESOURCE_TYPE_URN, "No such resource type: User and Group are served.")


@scim_endpoint({"GET"})
def schema_view(request: HttpRequest, provider: IdentityProvider, actor: User, schema_id: str) -> HttpResponse:
    """``/Schemas/urn:ietf:params:scim:schemas:core:2.0:User``."""
    return _one_by_id(SCHEMAS, schema_id, SCHEMA_URN, "No such schema.")


@scim_endpoint({"GET", "POST", "PUT", "PATCH", "DELETE"})
def unknown_view(request: HttpRequest, provider: IdentityProvider, actor: User, rest: str) -> HttpResponse:
    """Any other path under /scim/v2/ (a trailing slash included): a SCIM 404, never the portal's sign-in page."""
    raise ScimError(
        404, "No such SCIM endpoint: /Users, /Groups, /Schemas, /ResourceTypes and /ServiceProviderConfig are."
    )


urlpatterns = [
    path("ServiceProviderConfig", service_provider_config_view, name="service_provider_config"),
    path("ResourceTypes", resource_types_view, name="resource_types"),
    path("ResourceTypes/<str:type_id>", resource_type_view, name="resource_type"),
    path("Schemas", schemas_view, name="schemas"),
    path("Schemas/<str:schema_id>", schema_view, name="schema"),
    path("Users", users_view, name="users"),
    path("Users/<str:scim_id>", user_view, name="user"),
    path("Groups", groups_view, name="groups"),
    path("Groups/<str:scim_id>", group_view, name="group"),
    path("<path:rest>", unknown_view, name="unknown"),
]
