"""Admin for identity providers (four-eyed settings, write-only client secret) and read-only views of
the links and groups that sign-in and SCIM keep. Imported by ``accessgov.admin``."""

from django import forms
from django.contrib import admin

from accessgov.admin_base import FourEyesAdminMixin, ReadOnlyAdmin
from accessgov.models import ChangeRequest, ExternalIdentity, IdentityGroup, IdentityProvider, User

# Switching one of these off narrows who can sign in or be provisioned: applied at once, recorded by
# django-auditlog; switching on waits for a second admin like every other field.
NARROWING_WHEN_OFF = ("is_enabled", "jit_create_users", "accept_idp_mfa", "scim_enabled")


class IdentityProviderForm(forms.ModelForm):
    issuer = forms.URLField(
        max_length=500,
        assume_scheme="https",
        help_text="The issuer URL exactly as the provider names it, e.g. https://example.okta.com (its discovery "
        "document is read from <issuer>/.well-known/openid-configuration and must name the same issuer).",
    )
    client_secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="From the provider's app registration. Never shown back; leave empty to keep the current one.",
    )

    class Meta:
        model = IdentityProvider
        fields = [
            "name",
            "slug",
            "kind",
            "is_enabled",
            "issuer",
            "client_id",
            "client_secret",
            "scopes",
            "subject_claim",
            "username_claim",
            "jit_create_users",
            "accept_idp_mfa",
            "mfa_amr_values",
            "mfa_acr_values",
            "scim_enabled",
            "scim_service_account",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["scim_service_account"].queryset = User.objects.filter(is_service_account=True, is_active=True)

    def clean(self):
        data = super().clean()
        data["client_secret"] = data.get("client_secret") or (self.instance.client_secret if self.instance.pk else "")
        return data


@admin.register(IdentityProvider)
class IdentityProviderAdmin(FourEyesAdminMixin, admin.ModelAdmin):
    """Every setting of an identity provider is a four-eyes change (a second admin approves it on
    /changes/), creating one included; switching sign-in, just-in-time creation, IdP-MFA acceptance or
    SCIM off applies at once. The client secret is write-only. SCIM's token is a service token of the
    chosen service account with the scim:provision scope (admin → API tokens), four-eyed too."""

    four_eyes_kind = ChangeRequest.Kind.IDENTITY_PROVIDER
    form = IdentityProviderForm
    list_display = ("name", "slug", "kind", "is_enabled", "scim_enabled", "jit_create_users", "accept_idp_mfa")
    prepopulated_fields = {"slug": ("name",)}

    def _gated(self, form, change):
        names = super()._gated(form, change)
        if change:
            names = [n for n in names if not (n in NARROWING_WHEN_OFF and form.cleaned_data.get(n) is False)]
        return names

    def has_delete_permission(self, request, obj=None):
        return False  # switch it off instead: its links and groups are evidence


@admin.register(ExternalIdentity)
class ExternalIdentityAdmin(ReadOnlyAdmin):
    list_display = ("user", "provider", "subject", "user_name", "provisioned_by_scim", "last_sign_in_at")
    list_filter = ("provider", "provisioned_by_scim")
    search_fields = ("user__username", "subject", "user_name")


@admin.register(IdentityGroup)
class IdentityGroupAdmin(ReadOnlyAdmin):
    list_display = ("group", "provider", "display_name", "external_id", "created_at")
    list_filter = ("provider",)
    search_fields = ("display_name", "external_id")
