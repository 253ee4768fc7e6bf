"""What a token may do: its scopes (per view and method) and, for tokens limited to some roles,
which roles. The user's own rights are still checked by the services and accessgov.permissions."""

from django.db.models import QuerySet
from rest_framework.permissions import BasePermission

from accessgov.models import ApiToken


class TokenScope(BasePermission):
    """The view names the scope each HTTP method needs in ``required_scopes``; a token without it is
    refused (403) before the view runs. Only token-authenticated requests pass."""

    message = "This token does not have the scope this action needs."

    def has_permission(self, request, view) -> bool:
        token = request.auth
        if not isinstance(token, ApiToken):
            return False
        scope = view.required_scopes.get("GET" if request.method == "HEAD" else request.method)
        if scope is None:
            return True  # a method the view does not offer: it answers 405
        if not token.allows(scope):
            self.message = f"This token does not have the {scope} scope."
            return False
        return True


def limit_to_token_roles(queryset: QuerySet, token: ApiToken, field: str = "role") -> QuerySet:
    """Narrow ``queryset`` to the token's roles, when the token is limited to some."""
    role_ids = list(token.roles.values_list("pk", flat=True))
    if not role_ids:
        return queryset
    return queryset.filter(**{f"{field}__in": role_ids})


def token_allows_role(token: ApiToken, role_id: int) -> bool:
    role_ids = set(token.roles.values_list("pk", flat=True))
    return not role_ids or role_id in role_ids
