"""Where Django's admin sends people it does not let in (``admin:login``).

The admin signs in through the portal's password + OTP flow, never its own form. Someone signed in
without admin rights used to be sent to the portal's sign-in, which sends a signed-in person back to
``next`` (the admin), which sent them to sign in again: a redirect loop. They get a 403 instead.
"""

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.http import require_safe


@require_safe
def admin_login_view(request: HttpRequest) -> HttpResponse:
    user = request.user
    if not (user.is_authenticated and user.is_verified()):
        query = urlencode({"next": request.GET["next"]}) if request.GET.get("next") else ""
        return redirect(f"{reverse('accounts:login')}?{query}" if query else reverse("accounts:login"))
    if user.is_active and user.is_staff:
        target = request.GET.get("next", "")
        admin_page = target.startswith(reverse("admin:index")) and url_has_allowed_host_and_scheme(target, None)
        return redirect(target if admin_page else reverse("admin:index"))
    raise PermissionDenied("The admin is for portal admins, and your account has no admin rights.")
