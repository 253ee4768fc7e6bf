"""The inbox (issue 18, item 7): what needs me, what happened to my access and why; read marks; and the
per-person notification preferences."""

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST, require_safe

from accessgov import clock, filters, inbox, inputs
from accessgov.forms import NotificationPreferencesForm
from accessgov.http import PortalRequest
from accessgov.services import inbox as services
from accessgov.services import users as user_services


@require_safe
def inbox_view(request: PortalRequest) -> HttpResponse:
    before = inputs.parse_id(request.GET.get("before"))
    inbox_filter = filters.InboxFilter(request.GET, queryset=inbox.happened_events(request.user))
    valid = inbox_filter.is_valid()
    items = (
        inbox.happened(
            request.user,
            before=before,
            events=inbox_filter.qs,
            unread_only=bool(inbox_filter.form.cleaned_data.get("unread")),
        )
        if valid
        else []
    )
    query = request.GET.copy()
    query.pop("before", None)
    context = {
        "needs_me": inbox.needs_me(request.user, clock.now()),
        "happened": items,
        "filter": inbox_filter,
        "query": query.urlencode(),
        "older": items[-1].pk if len(items) == inbox.HAPPENED_PAGE_SIZE else None,
    }
    return render(request, "accessgov/inbox/inbox.html", context, status=200 if valid else 400)


@require_GET
def inbox_item_view(request: PortalRequest, pk: int) -> HttpResponse:
    """One "what happened" item: what, who, when and why, with a link to the request or grant. Opening it
    (from the list or from an email or Slack link) marks it read."""
    event = inbox.happened_item(request.user, pk)
    if event is None:
        raise Http404("No such inbox item.")
    services.inbox_item_mark_read(request.user, pk)
    return render(request, "accessgov/inbox/item.html", {"event": event})


@require_POST
def inbox_item_read_view(request: PortalRequest, pk: int) -> HttpResponse:
    if not services.inbox_item_mark_read(request.user, pk):
        raise Http404("No such inbox item.")
    return redirect("inbox")


@require_POST
def inbox_read_all_view(request: PortalRequest) -> HttpResponse:
    services.inbox_mark_all_read(request.user)
    messages.success(request, "Everything in your inbox is marked read.")
    return redirect("inbox")


@require_http_methods(["GET", "HEAD", "POST"])
def notification_preferences_view(request: PortalRequest) -> HttpResponse:
    form = NotificationPreferencesForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        user_services.user_set_notification_preferences(request.user, form.preferences())
        messages.success(request, "Your notification preferences are saved.")
        return redirect("notification_preferences")
    return render(request, "accessgov/inbox/preferences.html", {"form": form}, status=400 if form.errors else 200)
