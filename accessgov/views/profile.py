"""A person's own settings (issue 18): their time zone."""

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from accessgov.forms import TimeZoneForm, time_zone_names
from accessgov.http import PortalRequest
from accessgov.services import users as user_services


@require_http_methods(["GET", "HEAD", "POST"])
def time_zone_view(request: PortalRequest) -> HttpResponse:
    """GET: the form. POST: save it. The portal's script POSTs ``auto=1`` with the browser's zone on the
    first page a person opens without a zone: that only fills an empty setting (never overrides a
    choice) and answers 204; a zone the form refuses answers 400 with the reason."""
    user = request.user
    auto = request.POST.get("auto") == "1"
    form = TimeZoneForm(request.POST or None, initial={"time_zone": user.time_zone})
    if request.method == "POST" and form.is_valid():
        if auto:
            if not user.time_zone and form.cleaned_data["time_zone"]:
                user_services.user_set_time_zone(user, form.cleaned_data["time_zone"])
            return HttpResponse(status=204)
        # An emptied field is a choice of UTC, saved as such: an empty setting means "not chosen yet", which the
        # portal's script fills with the browser's zone on the next page (a probe cleared it and got New York).
        zone = form.cleaned_data["time_zone"] or "UTC"
        user_services.user_set_time_zone(user, zone)
        messages.success(request, f"Times now show in {zone}.")
        return redirect("accounts:time_zone")
    if request.method == "POST" and auto:
        return HttpResponse(
            "; ".join(str(error) for error in form.errors.get("time_zone", [])), status=400, content_type="text/plain"
        )
    context = {"form": form, "zones": sorted(time_zone_names())}
    return render(request, "accounts/time_zone.html", context, status=400 if form.errors else 200)
