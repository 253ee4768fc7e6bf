"""The identity providers offered on the sign-in and account security pages."""

from django import template

from accessgov.models import ExternalIdentity, IdentityProvider

register = template.Library()


@register.simple_tag
def sign_in_providers() -> list[IdentityProvider]:
    """Providers with sign-in switched on (none in the demo: the page then shows only the password form)."""
    return list(IdentityProvider.objects.filter(is_enabled=True).order_by("name"))


@register.simple_tag
def linked_provider_ids(user) -> set[int]:
    if not getattr(user, "is_authenticated", False):
        return set()
    return set(ExternalIdentity.objects.filter(user=user, subject__isnull=False).values_list("provider_id", flat=True))
