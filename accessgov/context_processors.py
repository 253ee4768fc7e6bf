from django.http import HttpRequest


def portal(request: HttpRequest) -> dict:
    """Navigation flags by persona, computed once per page."""
    user = getattr(request, "user", None)
    verified = bool(user and user.is_authenticated and user.is_verified())
    groups: set[str] = set()
    if verified:
        groups = set(user.groups.values_list("name", flat=True))
    return {
        "nav": {
            "verified": verified,
            "groups": groups,
            "is_staff": verified and user.is_staff,
        }
    }
