from django.contrib import admin
from django.urls import include, path

from accessgov.api import scim as scim_api
from accessgov.api import urls as api_urls
from accessgov.views import (
    accounts,
    activity,
    admin_login,
    approvals,
    audit,
    break_glass,
    changes,
    evidence,
    grants,
    health,
    home,
    inbox,
    integrations,
    monitoring,
    profile,
    provisioning,
    requests,
    reviews,
    sso,
    systems,
    tokens,
)
from accessgov.views import reports as report_views  # "reports" alone would read like a data module

accounts_patterns = (
    [
        path("login/", accounts.login_view, name="login"),
        path("otp/", accounts.otp_view, name="otp"),
        path("enrol/", accounts.enrol_view, name="enrol"),
        path("enrol/qr.svg", accounts.enrol_qr_view, name="enrol_qr"),
        path("backup-codes/", accounts.backup_codes_view, name="backup_codes"),
        path("verify/", accounts.step_up_view, name="step_up"),
        path("security/", accounts.security_view, name="security"),
        path("password/", accounts.password_change_view, name="password_change"),
        path("authenticator/reset/", accounts.authenticator_reset_view, name="authenticator_reset"),
        path("tokens/", tokens.tokens_view, name="tokens"),
        path("time-zone/", profile.time_zone_view, name="time_zone"),
        path("tokens/<int:pk>/revoke/", tokens.token_revoke_view, name="token_revoke"),
        path("logout/", accounts.logout_view, name="logout"),
        path("keep-alive/", accounts.keep_alive_view, name="keep_alive"),
        path("recover/<str:uidb64>/<str:token>/", accounts.recover_view, name="recover"),
    ],
    "accounts",
)

# Sign-in through the company's identity provider (docs/IDENTITY.md).
sso_patterns = (
    [
        path("<slug:slug>/start/", sso.sso_start_view, name="start"),
        path("<slug:slug>/callback/", sso.sso_callback_view, name="callback"),
        path("<slug:slug>/link/", sso.sso_link_view, name="link"),
    ],
    "sso",
)

# Fail closed, with a reference id and no stack trace (a JSON body for the API).
handler500 = "accessgov.views.errors.server_error"
# Refused input (a body too large, too many fields) in the same shape: JSON for the API.
handler400 = "accessgov.views.errors.bad_request"

urlpatterns = [
    path("", home.home_view, name="home"),
    path("healthz", health.healthz_view, name="healthz"),
    path("healthz/ready", health.ready_view, name="healthz_ready"),
    path("inbox/", inbox.inbox_view, name="inbox"),
    path("inbox/items/<int:pk>/", inbox.inbox_item_view, name="inbox_item"),
    path("inbox/items/<int:pk>/read/", inbox.inbox_item_read_view, name="inbox_item_read"),
    path("inbox/read-all/", inbox.inbox_read_all_view, name="inbox_read_all"),
    path("inbox/preferences/", inbox.notification_preferences_view, name="notification_preferences"),
    path("metrics", monitoring.metrics_view, name="metrics"),
    path("live/", monitoring.live_access_view, name="live_access"),
    path("requests/", requests.my_requests_view, name="my_requests"),
    path("requests/export.csv", requests.my_requests_export_view, name="my_requests_export"),
    path("requests/new/", requests.request_new_view, name="request_new"),
    path("requests/<int:pk>/", requests.request_detail_view, name="request_detail"),
    path("requests/<int:pk>/approve/", requests.request_approve_view, name="request_approve"),
    path("requests/<int:pk>/deny/", requests.request_deny_view, name="request_deny"),
    path("requests/<int:pk>/cancel/", requests.request_cancel_view, name="request_cancel"),
    path("access/", grants.my_access_view, name="my_access"),
    path("grants/", grants.grants_list_view, name="grants_list"),
    path("grants/export.csv", grants.grants_export_view, name="grants_export"),
    path("grants/<int:pk>/", grants.grant_detail_view, name="grant_detail"),
    path("grants/<int:pk>/release/", grants.grant_release_view, name="grant_release"),
    path("grants/<int:pk>/revoke/", grants.grant_revoke_view, name="grant_revoke"),
    path("grants/<int:pk>/extend/", grants.grant_extend_view, name="grant_extend"),
    path("approvals/", approvals.approver_dashboard_view, name="approvals"),
    path("approvals/decide/", approvals.bulk_decide_view, name="approvals_bulk_decide"),
    path("break-glass/", break_glass.break_glass_view, name="break_glass"),
    path("break-glass/follow-ups/", break_glass.follow_ups_view, name="break_glass_follow_ups"),
    path(
        "break-glass/follow-ups/<int:pk>/acknowledge/",
        break_glass.follow_up_acknowledge_view,
        name="follow_up_acknowledge",
    ),
    path("audit/", audit.audit_trail_view, name="audit_trail"),
    path("audit/export.csv", audit.audit_export_view, name="audit_export"),
    path("audit/verify/", audit.audit_verify_view, name="audit_verify"),
    path("audit/changes/", audit.model_changes_view, name="model_changes"),
    path("evidence/", evidence.evidence_list_view, name="evidence"),
    path("evidence/public-key.pem", evidence.evidence_public_key_view, name="evidence_public_key"),
    path("evidence/verify_evidence_pack.py", evidence.evidence_verifier_view, name="evidence_verifier"),
    path("evidence/<int:pk>/", evidence.evidence_detail_view, name="evidence_detail"),
    path("evidence/<int:pk>/progress/", evidence.evidence_progress_view, name="evidence_progress"),
    path("evidence/<int:pk>/download/", evidence.evidence_download_view, name="evidence_download"),
    path("reports/", report_views.reports_index_view, name="reports"),
    path("reports/access/", report_views.access_report_view, name="report_access"),
    path("reports/access/export.csv", report_views.access_report_export_view, name="report_access_export"),
    path("reports/approvals/", report_views.approvals_report_view, name="report_approvals"),
    path("reports/approvals/export.csv", report_views.approvals_report_export_view, name="report_approvals_export"),
    path("reports/break-glass/", report_views.break_glass_report_view, name="report_break_glass"),
    path(
        "reports/break-glass/export.csv",
        report_views.break_glass_report_export_view,
        name="report_break_glass_export",
    ),
    path("reports/denied/", report_views.denied_report_view, name="report_denied"),
    path("reports/denied/export.csv", report_views.denied_report_export_view, name="report_denied_export"),
    path("reports/right-sizing/", activity.right_sizing_view, name="report_right_sizing"),
    path("reports/right-sizing/propose/", activity.right_sizing_propose_view, name="right_sizing_propose"),
    path("activity/", activity.activity_view, name="activity"),
    path("activity/export.csv", activity.activity_export_view, name="activity_export"),
    path("activity/findings/<int:pk>/sign-off/", activity.finding_sign_off_view, name="finding_sign_off"),
    path("changes/", changes.change_list_view, name="changes"),
    path("changes/<int:pk>/", changes.change_detail_view, name="change_detail"),
    path("changes/<int:pk>/approve/", changes.change_approve_view, name="change_approve"),
    path("changes/<int:pk>/reject/", changes.change_reject_view, name="change_reject"),
    path("reviews/", reviews.campaign_list_view, name="reviews"),
    path("reviews/new/", reviews.campaign_create_view, name="review_new"),
    path("reviews/<int:pk>/", reviews.campaign_detail_view, name="review_detail"),
    path("reviews/<int:pk>/keep/", reviews.bulk_keep_view, name="review_bulk_keep"),
    path("reviews/<int:pk>/close/", reviews.campaign_close_view, name="review_close"),
    path("reviews/<int:pk>/evidence.csv", reviews.campaign_export_view, name="review_export"),
    path("reviews/items/<int:pk>/decide/", reviews.item_decide_view, name="review_item_decide"),
    path("reviews/items/<int:pk>/reassign/", reviews.item_reassign_view, name="review_item_reassign"),
    path("provisioning/", provisioning.provisioning_view, name="provisioning"),
    path("provisioning/tasks/<int:pk>/done/", provisioning.manual_task_done_view, name="manual_task_done"),
    path("systems/", systems.system_list_view, name="system_list"),
    path("systems/<slug:slug>/", systems.system_detail_view, name="system_detail"),
    path("systems/<slug:slug>/eligibility/", systems.eligibility_add_view, name="eligibility_add"),
    path("eligibility/<int:pk>/end/", systems.eligibility_end_view, name="eligibility_end"),
    path("integrations/slack/", integrations.slack_link_view, name="slack_link"),
    # Called by Slack and Jira, authenticated by their signatures (accessgov.middleware PUBLIC_VIEWS).
    path("integrations/slack/interactivity/", integrations.slack_interactivity_view, name="slack_interactivity"),
    path("integrations/jira/<int:provider_id>/webhook/", integrations.jira_webhook_view, name="jira_webhook"),
    path("integrations/github/<int:provider_id>/webhook/", integrations.github_webhook_view, name="github_webhook"),
    path("accounts/", include(accounts_patterns)),
    path("sso/", include(sso_patterns)),
    # SCIM 2.0 for the identity provider's provisioning client: its own token check, SCIM errors.
    path("scim/v2/", include(scim_api)),
    # The API authenticates tokens itself (accessgov.middleware lets the "api" namespace through);
    # its docs page is a portal page like any other.
    path("api/docs/", api_urls.docs_view, name="api_docs"),
    path("api/", include(api_urls)),
    # The admin signs in through the portal's password + OTP flow, never its own form; people signed in
    # without admin rights get a 403 there (not a redirect back to sign-in, which looped).
    path("admin/login/", admin_login.admin_login_view),
    path("admin/", admin.site.urls),
]
