"""Personal API tokens: made here (this page is behind password + OTP like every page), shown once,
listed with their last use, revoked with one click."""

from datetime import timedelta

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from accessgov import clock
from accessgov.exceptions import AccessGovError
from accessgov.forms import ApiTokenForm
from accessgov.http import PortalRequest
from accessgov.models import ApiToken
from accessgov.services import tokens as services
from accessgov.views.common import confirm_page, confirmed, refused


@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def tokens_view(request: PortalRequest) -> HttpResponse:
    """List my tokens and make a new one; a new secret is shown in this answer only (no redirect)."""
    form = ApiTokenForm(request.POST or None, user=request.user)
    status, created, secret = 200, None, ""
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            try:
                created, secret = services.api_token_create(
                    request.user,
                    user=request.user,
                    name=data["name"],
                    kind=ApiToken.Kind.PERSONAL,
                    expires_at=clock.now() + timedelta(days=data["lifetime_days"]),
                    scopes=data["scopes"],
                    client_address=request.client_address,
                )
            except AccessGovError as error:
                form.add_error(None, str(error))
                status = 400
            else:
                form = ApiTokenForm(user=request.user)
        else:
            status = 400
    tokens = ApiToken.objects.filter(user=request.user).prefetch_related("roles")
    context = {"form": form, "tokens": tokens, "created": created, "secret": secret, "now": clock.now()}
    return render(request, "accounts/tokens.html", context, status=status)


@require_POST
def token_revoke_view(request: PortalRequest, pk: int) -> HttpResponse:
    token = ApiToken.objects.filter(pk=pk, user=request.user).first()
    if token is None:
        raise Http404("No such token.")
    if not confirmed(request):
        return confirm_page(
            request,
            title=f"Revoke the token “{token.name}”?",
            consequences=[
                "1 token stops working now: every pipeline or script that uses it is refused from the next call.",
                "This cannot be undone; make a new token if it is still needed.",
            ],
            confirm_label="Yes, revoke the token",
            back="/accounts/tokens/",
        )
    try:
        token = services.api_token_revoke(request.user, pk, client_address=request.client_address)
    except AccessGovError as error:
        return refused(request, error, "/accounts/tokens/")
    messages.success(request, f"Token “{token.name}” revoked: it stops working now.")
    return redirect("accounts:tokens")
