from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from accessgov import otp


@require_GET
def home_view(request: HttpRequest) -> HttpResponse:
    context = {"backup_codes_left": otp.backup_codes_left(request.user)}
    return render(request, "accessgov/home.html", context)
