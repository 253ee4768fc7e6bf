"""/api/: the versioned API (token only) and its OpenAPI schema. The interactive docs page is a
portal page (verified session), routed in portal/urls.py as ``api_docs``."""

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer

from accessgov.api import oidc, views
from accessgov.api.activity import ActivityIngestView
from accessgov.api.authentication import BearerTokenAuthentication, VerifiedSessionAuthentication

app_name = "api"


class SchemaView(SpectacularAPIView):
    """The OpenAPI document, for a token or a verified portal session."""

    authentication_classes = [BearerTokenAuthentication, VerifiedSessionAuthentication]
    permission_classes = [IsAuthenticated]

    def handle_exception(self, exc):
        # Refusals in the API's JSON error format, not rendered as an OpenAPI document.
        self.request.accepted_renderer, self.request.accepted_media_type = JSONRenderer(), "application/json"
        return super().handle_exception(exc)


class DocsView(SpectacularSwaggerSplitView):
    """Swagger UI from the vendored sidecar assets; the init script is a separate file (CSP: no
    inline script) and the page's own style is a static stylesheet (CSP: no inline style)."""

    authentication_classes = [VerifiedSessionAuthentication]
    permission_classes = [IsAuthenticated]
    template_name = "accessgov/api/swagger_ui.html"
    url_name = "api:schema"


urlpatterns = [
    path("schema/", SchemaView.as_view(), name="schema"),
    path("v1/requests/", views.AccessRequestListView.as_view(), name="request_list"),
    path("v1/requests/<int:pk>/", views.AccessRequestDetailView.as_view(), name="request_detail"),
    path("v1/requests/<int:pk>/cancel/", views.AccessRequestCancelView.as_view(), name="request_cancel"),
    path("v1/requests/<int:pk>/approve/", views.AccessRequestApproveView.as_view(), name="request_approve"),
    path("v1/requests/<int:pk>/deny/", views.AccessRequestDenyView.as_view(), name="request_deny"),
    path("v1/decisions/", views.DecisionQueueView.as_view(), name="decision_queue"),
    path("v1/grants/", views.GrantListView.as_view(), name="grant_list"),
    path("v1/grants/<int:pk>/", views.GrantDetailView.as_view(), name="grant_detail"),
    path("v1/grants/<int:pk>/release/", views.GrantReleaseView.as_view(), name="grant_release"),
    path("v1/grants/<int:pk>/extend/", views.GrantExtendView.as_view(), name="grant_extend"),
    path("v1/token/", views.CurrentTokenView.as_view(), name="current_token"),
    path("v1/systems/", views.SystemListView.as_view(), name="system_list"),
    path("v1/roles/", views.RoleListView.as_view(), name="role_list"),
    path("v1/roles/<int:pk>/", views.RoleDetailView.as_view(), name="role_detail"),
    path("v1/eligibility/", views.EligibilityListView.as_view(), name="eligibility_list"),
    path("v1/events/", views.AccessEventListView.as_view(), name="event_list"),
    path("v1/oidc/token/", oidc.OidcTokenExchangeView.as_view(), name="oidc_token"),
    path("v1/evidence-packs/", views.EvidencePackListView.as_view(), name="evidence_pack_list"),
    path("v1/evidence-packs/<int:pk>/", views.EvidencePackDetailView.as_view(), name="evidence_pack_detail"),
    path(
        "v1/evidence-packs/<int:pk>/download/",
        views.EvidencePackDownloadView.as_view(),
        name="evidence_pack_download",
    ),
    path("v1/activity/", ActivityIngestView.as_view(), name="activity_ingest"),
    re_path(r"^v1/(?P<rest>.*)$", views.ApiNotFoundView.as_view(), name="not_found"),
]

docs_view = DocsView.as_view()
