from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from accessgov.views import accounts, health, home

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
        path("logout/", accounts.logout_view, name="logout"),
    ],
    "accounts",
)

urlpatterns = [
    path("", home.home_view, name="home"),
    path("healthz", health.healthz_view, name="healthz"),
    path("accounts/", include(accounts_patterns)),
    # The admin signs in through the portal's password + OTP flow, never its own form.
    path("admin/login/", RedirectView.as_view(pattern_name="accounts:login", query_string=True)),
    path("admin/", admin.site.urls),
]
