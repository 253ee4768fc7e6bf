"""Slack: approval requests posted with Approve/Deny buttons (Web API through ``slack_sdk``'s WebClient,
at the workspace's configured API address), interactivity requests verified with the signing secret
(``slack_sdk``'s SignatureVerifier: HMAC over the raw body and a timestamp at most 5 minutes old; a
replay within that window is refused by services.integrations.slack_request_seen), and the modals that
link a Slack user and ask for a TOTP code. Reading and building only; decisions are the services'."""

import io
import json
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings
from slack_sdk import WebClient
from slack_sdk.signature import SignatureVerifier

from accessgov import inputs, net, policies
from accessgov.integrations.http import MAX_ANSWER_BYTES, ensure_allowed_url, opener, ssl_context
from accessgov.models import AccessRequest, Decision, SlackMessage, SlackWorkspace
from accessgov.notifications import absolute, slack_escape

APPROVE = "accessgov_approve"
DENY = "accessgov_deny"
LINK_VIEW = "accessgov_link"
DECIDE_VIEW = "accessgov_decide"
MAX_BODY_BYTES = 64 * 1024


class _GuardedWebClient(WebClient):
    """slack_sdk's WebClient (its methods, arguments, retries and errors), each HTTP exchange sent through the
    integrations' opener: to the address the guard checked (DNS rebinding), no redirect followed (urllib's
    default opener would follow one to anywhere), within ``net.deadline`` of the client's timeout (the whole
    exchange, not each read), the answer — an error status's too — read up to MAX_ANSWER_BYTES. The guard checks
    the workspace's API URL once per client, within the first exchange's limit (its name lookup too); a retry goes
    to the address it checked. Raises ProviderError when the guard refuses the URL."""

    def __init__(self, *, guarded_url: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self._guarded_url = guarded_url
        self._opener: urllib.request.OpenerDirector | None = None

    def _perform_urllib_http_request_internal(self, url, req):
        with net.deadline(self.timeout) as call:
            if self._opener is None:
                self._opener = opener(ensure_allowed_url(self._guarded_url), self.ssl)
            try:
                with self._opener.open(req, timeout=self.timeout) as response:
                    charset = response.headers.get_content_charset() or "utf-8"
                    body = response.read(MAX_ANSWER_BYTES).decode(charset, "replace")
                    call.done()  # answered: a message posted is not posted again for a timer firing now
                    return {"status": response.code, "headers": response.headers, "body": body}
            except urllib.error.HTTPError as error:
                # slack_sdk would read this body itself, unbounded and after the deadline: read it here.
                with error:
                    raw = error.read(MAX_ANSWER_BYTES)
                raise urllib.error.HTTPError(error.url, error.code, error.msg, error.headers, io.BytesIO(raw)) from None


def client_for(workspace: SlackWorkspace) -> WebClient:
    """slack_sdk's WebClient for ``workspace``: through the address guard, each call within
    INTEGRATIONS_TIMEOUT_SECONDS in all."""
    base = workspace.api_base_url if workspace.api_base_url.endswith("/") else workspace.api_base_url + "/"
    return _GuardedWebClient(
        guarded_url=workspace.api_base_url,
        token=workspace.bot_token,
        base_url=base,
        timeout=settings.INTEGRATIONS_TIMEOUT_SECONDS,
        ssl=ssl_context(),
    )


def verify(workspace: SlackWorkspace, body: bytes, headers) -> bool:
    """The request is signed with this workspace's signing secret, and its timestamp is fresh."""
    if not workspace.signing_secret.strip():
        return False
    try:
        return SignatureVerifier(workspace.signing_secret).is_valid_request(body, dict(headers))
    except (ValueError, TypeError):  # a timestamp that is not a number
        return False


def parse_payload(body: bytes) -> dict | None:
    """An interactivity request's ``payload`` (form-encoded JSON), or None when malformed (also: text no
    database can compare — a NUL, a lone surrogate — or nesting past 32 levels). Read its parts with ``dig``:
    any of them may have another shape than Slack's."""
    try:
        values = parse_qs(body.decode("utf-8"), max_num_fields=5, strict_parsing=True)
        payload = json.loads(values["payload"][0])
    except (UnicodeDecodeError, ValueError, KeyError, IndexError, RecursionError):
        return None
    if not isinstance(payload, dict) or inputs.json_problem(payload) is not None:
        return None
    return payload


def dig(value: Any, *keys: str) -> Any:
    """``value[keys[0]][keys[1]]…``, or None where a part is missing or not an object."""
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def state_of(access_request: AccessRequest, now: datetime) -> str:
    """What the message shows at ``now``, as a comparable string (the message is updated when it changes): the
    status at ``now`` (``AccessRequest.status_at``: lapsed from its deadline, swept or not)."""
    status = access_request.status_at(now)
    if status == AccessRequest.Status.PENDING:
        approvals = access_request.decisions.filter(outcome=Decision.Outcome.APPROVE).count()
        return f"pending:{approvals}"
    return status


def _who(user) -> str:
    return slack_escape(user.get_full_name() or user.get_username())


def blocks_for(access_request: AccessRequest, now: datetime) -> tuple[str, list[dict]]:
    """The message text and blocks: who asks for what, why, the ticket, the approvals so far; buttons
    while it is pending at ``now``, the outcome afterwards (``AccessRequest.status_at``: a request past its
    deadline reads lapsed, without buttons, before the sweep records it)."""
    status = access_request.status_at(now)
    role = access_request.role
    needed = max(1, role.approvals_required)
    approvals = list(
        access_request.decisions.filter(outcome=Decision.Outcome.APPROVE).select_related("approver").order_by("pk")
    )
    heading = f"{_who(access_request.requester)} requests *{slack_escape(str(role))}*"
    lines = [
        f"Duration: {policies.format_duration(access_request.requested_duration)} · "
        f"risk: {role.get_risk_tier_display()}"
        + (" · needs a fresh authenticator code" if role.step_up_required else ""),
        f"Why: {slack_escape(access_request.justification)}",
    ]
    if access_request.ticket:
        ticket = slack_escape(access_request.ticket)
        if access_request.ticket_title:
            ticket += f" — {slack_escape(access_request.ticket_title)}"
        lines.append(
            f"Ticket: <{access_request.ticket_url}|{ticket}>" if access_request.ticket_url else f"Ticket: {ticket}"
        )
    lines.append(
        f"Approvals: {len(approvals)} of {needed}"
        + (f" ({', '.join(_who(d.approver) for d in approvals)})" if approvals else "")
    )
    url = absolute(f"/requests/{access_request.pk}/")
    blocks: list[dict] = [{"type": "section", "text": {"type": "mrkdwn", "text": heading + "\n" + "\n".join(lines)}}]
    if status == AccessRequest.Status.PENDING:
        value = str(access_request.pk)
        blocks.append(
            {
                "type": "actions",
                "block_id": f"request-{access_request.pk}",
                "elements": [
                    {
                        "type": "button",
                        "action_id": APPROVE,
                        "value": value,
                        "style": "primary",
                        "text": {"type": "plain_text", "text": "Approve"},
                    },
                    {
                        "type": "button",
                        "action_id": DENY,
                        "value": value,
                        "style": "danger",
                        "text": {"type": "plain_text", "text": "Deny"},
                    },
                    {
                        "type": "button",
                        "action_id": "accessgov_open",
                        "url": url,
                        "text": {"type": "plain_text", "text": "Open in AccessGov"},
                    },
                ],
            }
        )
        text = f"{access_request.requester.get_username()} requests {role}"
    else:
        outcome = {
            AccessRequest.Status.APPROVED: "Approved",
            AccessRequest.Status.DENIED: "Denied",
            AccessRequest.Status.CANCELLED: "Cancelled",
            AccessRequest.Status.LAPSED: "Lapsed: nobody decided in time",
        }[status]
        deciders = access_request.decisions.select_related("approver").order_by("pk")
        detail = [
            f"{_who(d.approver)} {d.get_outcome_display().lower()}d"
            + (f": {slack_escape(d.comment)}" if d.comment else "")
            for d in deciders
        ]
        if access_request.auto_approved_by_rule:
            detail.append(f"automatically ({slack_escape(access_request.auto_approved_by_rule)})")
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"*{outcome}*" + (" — " + "; ".join(detail) if detail else "") + f" · <{url}|Open>",
                    }
                ],
            }
        )
        text = f"{outcome}: {access_request.requester.get_username()}'s request for {role}"
    return text, blocks


def post_request(workspace: SlackWorkspace, access_request: AccessRequest, now: datetime) -> tuple[str, str]:
    text, blocks = blocks_for(access_request, now)
    answer = client_for(workspace).chat_postMessage(channel=workspace.channel, text=text, blocks=blocks)
    return str(answer["channel"]), str(answer["ts"])


def update_request(
    workspace: SlackWorkspace, message: SlackMessage, access_request: AccessRequest, now: datetime
) -> None:
    text, blocks = blocks_for(access_request, now)
    client_for(workspace).chat_update(channel=message.channel, ts=message.ts, text=text, blocks=blocks)


def tell(workspace: SlackWorkspace, *, channel: str, user: str, text: str) -> None:
    """An ephemeral answer only the person who clicked sees."""
    client_for(workspace).chat_postEphemeral(channel=channel, user=user, text=text)


def _input(block_id: str, label: str, *, optional: bool, max_length: int, multiline: bool = False) -> dict:
    return {
        "type": "input",
        "block_id": block_id,
        "optional": optional,
        "label": {"type": "plain_text", "text": label},
        "element": {"type": "plain_text_input", "action_id": "value", "max_length": max_length, "multiline": multiline},
    }


def open_link_modal(workspace: SlackWorkspace, trigger_id: str) -> None:
    view = {
        "type": "modal",
        "callback_id": LINK_VIEW,
        "title": {"type": "plain_text", "text": "Link AccessGov"},
        "submit": {"type": "plain_text", "text": "Link"},
        "blocks": [
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": "Your Slack account is not linked to AccessGov yet. "
                    f"Make a one-time code at <{absolute('/integrations/slack/')}|AccessGov → Account → Slack> and type it here.",
                },
            },
            _input("code", "One-time code", optional=False, max_length=20),
        ],
    }
    client_for(workspace).views_open(trigger_id=trigger_id, view=view)


def open_decide_modal(workspace: SlackWorkspace, trigger_id: str, access_request: AccessRequest, outcome: str) -> None:
    """Deny (a comment is required) or approve a step-up role (a current TOTP code is required)."""
    blocks = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f"{'Approve' if outcome == 'approve' else 'Deny'} "
                f"{_who(access_request.requester)}'s request for *{slack_escape(str(access_request.role))}*.",
            },
        },
        _input(
            "comment",
            "Comment" if outcome == "approve" else "Why (the requester reads it)",
            optional=outcome == "approve",
            max_length=1000,
            multiline=True,
        ),
    ]
    if access_request.role.step_up_required:
        blocks.append(_input("code", "Code from your authenticator app", optional=False, max_length=6))
    view = {
        "type": "modal",
        "callback_id": DECIDE_VIEW,
        "private_metadata": json.dumps({"request": access_request.pk, "outcome": outcome}),
        "title": {"type": "plain_text", "text": "Approve" if outcome == "approve" else "Deny"},
        "submit": {"type": "plain_text", "text": "Approve" if outcome == "approve" else "Deny"},
        "blocks": blocks,
    }
    client_for(workspace).views_open(trigger_id=trigger_id, view=view)


def submitted_value(payload: dict, block_id: str) -> str:
    value = dig(payload, "view", "state", "values", block_id, "value", "value")
    return value.strip() if isinstance(value, str) else ""
