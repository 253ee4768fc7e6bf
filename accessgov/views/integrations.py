"""Integration endpoints: Slack interactivity (buttons and modals), the signed Jira webhook, and the
portal page where a person links their Slack account. The two provider endpoints are public (no session:
the provider's signature is the authentication) and CSRF-exempt; everything else they do goes through
the same services and permission checks as the portal."""

import json
import logging

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from accessgov import clock, inputs, otp
from accessgov.exceptions import AccessGovError, StepUpRequired
from accessgov.integrations import github, jira, slack
from accessgov.integrations.http import ProviderError
from accessgov.models import AccessRequest, SlackUserLink, SlackWorkspace, TicketProvider, User
from accessgov.services import access_requests as request_services
from accessgov.services import after_commit
from accessgov.services import integrations as integration_services
from accessgov.services.events import acting_via
from accessgov.views.common import act_with_step_up

logger = logging.getLogger("accessgov.security")
MAX_WEBHOOK_BYTES = 256 * 1024


def _too_big(request: HttpRequest, limit: int) -> bool:
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return True
    return declared > limit


# --- Slack interactivity -------------------------------------------------------------------------


@csrf_exempt
@require_POST
def slack_interactivity_view(request: HttpRequest) -> HttpResponse:
    """Slack's interactivity request URL. Refused (401) unless signed by an active workspace's signing
    secret with a fresh timestamp and never seen before; the acting AccessGov user is the one the Slack
    user linked (after OTP), never anyone else."""
    if _too_big(request, slack.MAX_BODY_BYTES):
        return HttpResponse("Too large.", status=413, content_type="text/plain")
    body = request.body
    workspace = next(
        (w for w in SlackWorkspace.objects.filter(is_active=True) if slack.verify(w, body, request.headers)), None
    )
    if workspace is None:
        logger.warning("slack request refused: bad or stale signature client=%s", request.client_address)
        return HttpResponse("Invalid signature.", status=401, content_type="text/plain")
    if integration_services.slack_request_seen(
        request.headers.get("X-Slack-Request-Timestamp", ""), request.headers.get("X-Slack-Signature", "")
    ):
        logger.warning("slack request refused: replay client=%s", request.client_address)
        return HttpResponse("Replayed request.", status=401, content_type="text/plain")
    payload = slack.parse_payload(body)
    if payload is None:
        return HttpResponse("Malformed payload.", status=400, content_type="text/plain")
    team = str(slack.dig(payload, "team", "id") or slack.dig(payload, "user", "team_id") or "")
    slack_user = str(slack.dig(payload, "user", "id") or "")
    if team != workspace.team_id or not slack_user:
        return HttpResponse("Wrong workspace.", status=401, content_type="text/plain")
    try:
        # Every event a Slack action causes says so (data.via), like an API token's.
        with acting_via({"slack": {"workspace": workspace.team_id, "user": slack_user}}):
            if payload.get("type") == "block_actions":
                return _on_action(workspace, payload, slack_user, request.client_address)
            if payload.get("type") == "view_submission":
                return _on_submission(workspace, payload, slack_user, request.client_address)
    except ProviderError as error:
        logger.warning("slack answer failed: %s", error)
    return HttpResponse(status=200)


def _tell(workspace: SlackWorkspace, payload: dict, slack_user: str, text: str) -> None:
    channel = str(slack.dig(payload, "channel", "id") or workspace.channel)
    try:
        slack.tell(workspace, channel=channel, user=slack_user, text=text)
    except Exception as error:
        logger.warning("slack ephemeral failed: %s", error.__class__.__name__)


def _sync_soon(access_request_id: int) -> None:
    after_commit.enqueue("slack_sync", access_request_id)


def _on_action(workspace: SlackWorkspace, payload: dict, slack_user: str, client_address) -> HttpResponse:
    actions = payload.get("actions")
    action = actions[0] if isinstance(actions, list) and actions and isinstance(actions[0], dict) else {}
    action_id, value = action.get("action_id"), str(action.get("value") or "")
    if action_id not in (slack.APPROVE, slack.DENY) or inputs.parse_id(value) is None:
        return HttpResponse(status=200)
    trigger_id = str(payload.get("trigger_id") or "")
    user = integration_services.slack_linked_user(workspace, slack_user)
    if user is None:
        slack.open_link_modal(workspace, trigger_id)
        return HttpResponse(status=200)
    access_request = AccessRequest.objects.select_related("role__system", "requester").filter(pk=int(value)).first()
    if access_request is None:
        return HttpResponse(status=200)
    now = clock.now()
    if not access_request.is_pending_at(now):  # lapsed at its deadline, swept or not
        _tell(workspace, payload, slack_user, f"This request is already {access_request.status_label_at(now).lower()}.")
        _sync_soon(access_request.pk)
        return HttpResponse(status=200)
    if action_id == slack.DENY or access_request.role.step_up_required:
        slack.open_decide_modal(workspace, trigger_id, access_request, "deny" if action_id == slack.DENY else "approve")
        return HttpResponse(status=200)
    try:
        request_services.access_request_approve(user, access_request.pk, client_address=client_address, comment="")
    except AccessGovError as error:
        _tell(workspace, payload, slack_user, f"Not approved: {error}")
        return HttpResponse(status=200)
    _sync_soon(access_request.pk)
    return HttpResponse(status=200)


def _errors(block: str, message: str) -> JsonResponse:
    return JsonResponse({"response_action": "errors", "errors": {block: message[:150]}})


def _on_submission(workspace: SlackWorkspace, payload: dict, slack_user: str, client_address) -> HttpResponse:
    callback = slack.dig(payload, "view", "callback_id")
    if callback == slack.LINK_VIEW:
        try:
            integration_services.slack_link_consume(workspace, slack_user, slack.submitted_value(payload, "code"))
        except AccessGovError as error:
            return _errors("code", str(error))
        return HttpResponse(status=200)
    if callback != slack.DECIDE_VIEW:
        return HttpResponse(status=200)
    try:
        metadata = json.loads(slack.dig(payload, "view", "private_metadata") or "{}")
        access_request_id, outcome = inputs.parse_id(str(metadata["request"])), metadata["outcome"]
    except (ValueError, KeyError, TypeError):
        access_request_id = None
    if access_request_id is None:  # also a float such as 1e999 (infinity), which int() refused with a 500
        return HttpResponse("Malformed view.", status=400, content_type="text/plain")
    user = integration_services.slack_linked_user(workspace, slack_user)
    if user is None:
        return _errors("comment", "Your Slack account is not linked to AccessGov.")
    access_request = AccessRequest.objects.select_related("role").filter(pk=access_request_id).first()
    if access_request is None or outcome not in ("approve", "deny"):
        return _errors("comment", "This request no longer exists.")
    code = slack.submitted_value(payload, "code").replace(" ", "")
    if access_request.role.step_up_required and not inputs.is_totp_code(code):
        return _errors("code", "Enter the 6 digits from your authenticator app.")
    comment = slack.submitted_value(payload, "comment")

    def decide(step_up_at):
        if outcome == "approve":
            return request_services.access_request_approve(
                user, access_request_id, comment=comment, step_up_at=step_up_at, client_address=client_address
            )
        return request_services.access_request_deny(
            user, access_request_id, comment=comment, step_up_at=step_up_at, client_address=client_address
        )

    try:
        if access_request.role.step_up_required:
            _spend_code_last(user, code, decide, client_address)
        else:
            decide(None)
    except _CodeRefused as error:
        return _errors("code", str(error))
    except StepUpRequired as error:
        return _errors("code" if access_request.role.step_up_required else "comment", str(error))
    except AccessGovError as error:
        return _errors("comment", str(error))
    _sync_soon(access_request_id)
    return HttpResponse(status=200)


class _CodeRefused(StepUpRequired):
    """The code typed into the modal is wrong, reused or throttled."""


def _spend_code_last(user: User, code: str, decide, client_address) -> None:
    """A step-up role needs a current TOTP code typed into the modal, checked like the portal's step-up
    (``otp.verify_code``: each code works once, wrong codes are throttled) and spent last: the decision
    is rehearsed first (``otp.act_spending_code_last``), so a refusal for another reason leaves the code
    usable."""

    def spend_code():
        result = otp.verify_code(user, code, allow_backup=False)
        if not result.ok:
            logger.warning("otp failure step=slack-step-up user=%s client=%s", user.pk, client_address)
            raise _CodeRefused(result.message)
        return clock.now()

    otp.act_spending_code_last(decide, code_at=None, spend_code=spend_code)


# --- Jira webhook --------------------------------------------------------------------------------


@csrf_exempt
@require_POST
def jira_webhook_view(request: HttpRequest, provider_id: int) -> HttpResponse:
    """Jira's webhook for one ticket provider: refused (401) unless ``X-Hub-Signature`` is the HMAC of the
    raw body with the provider's webhook secret; 400 unless the body is a JSON object whose ``issue.key`` is
    an issue key (the check ``jira.issue_get`` applies to a request's ticket). The issue is then read back
    from Jira (the body's own status is never trusted) and the grants bound to it end if it closed."""
    if _too_big(request, MAX_WEBHOOK_BYTES):
        return HttpResponse("Too large.", status=413, content_type="text/plain")
    provider = TicketProvider.objects.filter(pk=provider_id, is_active=True, kind=TicketProvider.Kind.JIRA).first()
    body = request.body
    if provider is None or not jira.webhook_signature_valid(
        provider.webhook_secret, body, request.headers.get("X-Hub-Signature", "")
    ):
        logger.warning("jira webhook refused: bad signature provider=%s client=%s", provider_id, request.client_address)
        return HttpResponse("Invalid signature.", status=401, content_type="text/plain")
    try:
        key = jira.webhook_issue_key(json.loads(body))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return HttpResponse("Malformed body.", status=400, content_type="text/plain")
    if key is None:  # signed, but not Jira's shape: nothing to read back, and the sender should know
        return HttpResponse(
            "Not a Jira issue event: the body must be a JSON object whose issue.key is an issue key like OPS-123.",
            status=400,
            content_type="text/plain",
        )
    try:
        ended = integration_services.ticket_webhook_received(provider, key)
    except ProviderError:
        return HttpResponse(
            "Jira could not be asked; the next sweep checks again.", status=202, content_type="text/plain"
        )
    return JsonResponse({"ticket": key, "grants_ended": ended})


# --- GitHub webhook ------------------------------------------------------------------------------

GITHUB_DELIVERY_ID_MAX = 100


@csrf_exempt
@require_POST
def github_webhook_view(request: HttpRequest, provider_id: int) -> HttpResponse:
    """GitHub's webhook for one ticket provider of kind GitHub: refused (401) unless
    ``X-Hub-Signature-256`` is the HMAC-SHA256 of the raw body with the provider's webhook secret. An
    ``issues`` delivery names ``repository.full_name`` + ``issue.number``; that issue is read back from
    GitHub's API (the body's ``action`` and state are never trusted) and the grants bound to it end if it
    is closed. A delivery id seen before is a replay: answered 200, nothing asked or done. ``ping`` and
    other events are acknowledged (204)."""
    if _too_big(request, MAX_WEBHOOK_BYTES):
        return HttpResponse("Too large.", status=413, content_type="text/plain")
    provider = TicketProvider.objects.filter(pk=provider_id, is_active=True, kind=TicketProvider.Kind.GITHUB).first()
    body = request.body
    if provider is None or not github.webhook_signature_valid(
        provider.webhook_secret, body, request.headers.get("X-Hub-Signature-256", "")
    ):
        logger.warning(
            "github webhook refused: bad signature provider=%s client=%s", provider_id, request.client_address
        )
        return HttpResponse("Invalid signature.", status=401, content_type="text/plain")
    if request.headers.get("X-GitHub-Event", "") != "issues":
        return HttpResponse(status=204)
    try:
        key = github.webhook_issue_key(json.loads(body))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return HttpResponse("Malformed body.", status=400, content_type="text/plain")
    if key is None:
        return HttpResponse("Not an issue of a repository.", status=400, content_type="text/plain")
    delivery = request.headers.get("X-GitHub-Delivery", "").strip()
    if not delivery or len(delivery) > GITHUB_DELIVERY_ID_MAX:
        return HttpResponse("X-GitHub-Delivery is missing.", status=400, content_type="text/plain")
    if integration_services.ticket_delivery_seen(provider, delivery):
        logger.warning("github webhook replay ignored provider=%s client=%s", provider_id, request.client_address)
        return JsonResponse({"ticket": key, "grants_ended": 0, "duplicate": True})
    try:
        ended = integration_services.ticket_webhook_received(provider, key)
    except ProviderError:
        return HttpResponse(
            "GitHub could not be asked; the next sweep checks again.", status=202, content_type="text/plain"
        )
    return JsonResponse({"ticket": key, "grants_ended": ended})


# --- Linking one's Slack account ------------------------------------------------------------------


@require_http_methods(["GET", "HEAD", "POST"])
def slack_link_view(request: HttpRequest) -> HttpResponse:
    """Account → Slack: make a one-time link code (after typing a current authenticator code) to type
    into Slack, or remove a link."""
    user = request.user
    if user.is_service_account:
        raise Http404
    code, status = None, 200
    if request.method == "POST":
        if (unlink := inputs.parse_id(request.POST.get("unlink", ""))) is not None:
            integration_services.slack_unlink(user, unlink)
            messages.success(request, "Slack account unlinked.")
            return redirect("slack_link")
        try:
            code = act_with_step_up(
                request,
                request.POST.get("otp_token", ""),
                lambda step_up_at: integration_services.slack_link_code_create(user, step_up_at=step_up_at),
            )
        except AccessGovError as problem:
            messages.error(request, str(problem))
            status = 403
    context = {
        "code": code,
        "links": SlackUserLink.objects.filter(user=user).select_related("workspace"),
        "workspaces": SlackWorkspace.objects.filter(is_active=True),
        "minutes": settings.SLACK_LINK_CODE_MINUTES,
    }
    response = render(request, "accessgov/integrations/slack_link.html", context, status=status)
    response["Cache-Control"] = "no-store"
    return response
