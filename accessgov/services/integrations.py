"""Integrations, write side (and the provider questions asked before a transaction).

- ``external_checks``: before ``access_request_submit`` opens its transaction (no I/O inside one), ask
  the ticket provider about the ticket (fail closed: a ticket that cannot be confirmed refuses the
  request) and the on-call provider about the role's incident-aware rules (fail closed too: no answer
  means the rule does not match and people decide, with the reason shown).
- ``integrations_sweep`` (beat, INTEGRATIONS_SWEEP_SECONDS) and ``ticket_webhook_received``: grants bound
  to a ticket that closed, or to an incident that was resolved, end through
  ``grants.grant_revoke_by_system`` with their own end reason and event.
- Slack: one-time link codes (made after a fresh TOTP), links, the approval message kept in step with
  the request (``slack_request_sync``, a task after commit: Slack's outage never blocks a decision).
- OIDC: ``oidc_token_exchange`` turns a verified CI identity token into a short-lived service token.
"""

import hashlib
import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q

from accessgov import clock, otp, permissions, policies
from accessgov.exceptions import PolicyViolation, TransitionNotAllowed
from accessgov.integrations import jira, oidc_trust, pagerduty, slack, tickets
from accessgov.integrations.http import ProviderError
from accessgov.models import (
    AccessEvent,
    AccessRequest,
    ApiToken,
    Grant,
    OidcTokenUse,
    OnCallProvider,
    Role,
    SlackLinkCode,
    SlackMessage,
    SlackRequestSeen,
    SlackUserLink,
    SlackWorkspace,
    TicketProvider,
    User,
)
from accessgov.services import after_commit
from accessgov.services import grants as grant_services
from accessgov.services import tokens as token_services
from accessgov.services.events import event_record

logger = logging.getLogger("accessgov.integrations")
Type = AccessEvent.Type
MAX_TICKETS_PER_SWEEP = 200
MAX_INCIDENTS_PER_SWEEP = 200
SLACK_SEEN_KEEP = timedelta(minutes=10)


# --- Before the transaction: what the providers say ----------------------------------------------


@dataclass
class ExternalChecks:
    """What the providers answered for one request (asked outside any transaction)."""

    provider_checks: dict[int, list] = field(default_factory=dict)
    issue: jira.Issue | None = None
    ticket_provider: TicketProvider | None = None


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _ticket_check(role: Role, requester: User, ticket: str) -> tuple[TicketProvider | None, jira.Issue | None]:
    provider = role.ticket_provider
    if provider is None or not provider.is_active:
        return None, None
    ticket = ticket.strip()
    if not ticket:
        if role.ticket_required or role.ticket_bound:
            raise PolicyViolation(f"{role} requires a {provider.name} ticket.")
        return None, None
    problem = tickets.reference_problem(provider, ticket)
    if problem:
        raise PolicyViolation(problem)
    try:
        issue = tickets.issue_get(provider, ticket)
    except ProviderError as error:
        raise PolicyViolation(f"The ticket could not be confirmed: {error} Try again in a moment.") from None
    if not issue.exists:
        raise PolicyViolation(f"{ticket} does not exist in {provider.name} (or AccessGov may not see it).")
    if not issue.is_open:
        raise PolicyViolation(f"{issue.key} is closed ({issue.status}): access needs an open ticket.")
    projects = _csv(role.ticket_projects)
    if projects and issue.project.lower() not in {p.lower() for p in projects}:
        raise PolicyViolation(f"{issue.key} is not in an allowed project ({', '.join(projects)}).")
    types = _csv(role.ticket_issue_types)
    github = provider.kind == TicketProvider.Kind.GITHUB
    offered = {t.lower() for t in (issue.types if github else (issue.issue_type,)) if t}
    if types and not offered & {t.lower() for t in types}:
        what = f"labelled {', '.join(issue.types) or 'with nothing'}" if github else f"a {issue.issue_type}"
        raise PolicyViolation(f"{issue.key} is {what}; allowed: {', '.join(types)}.")
    if role.ticket_assigned_to_requester and not _assigned_to(provider, issue, requester):
        raise PolicyViolation(f"{issue.key} must be assigned to you.")
    return provider, issue


def _assigned_to(provider: TicketProvider, issue: jira.Issue, requester: User) -> bool:
    """Jira names assignees by email; GitHub by login, matched against the AccessGov username."""
    if provider.kind == TicketProvider.Kind.GITHUB:
        return requester.get_username().lower() in {login.lower() for login in issue.assignee_logins}
    return (
        bool(requester.email)
        and issue.assignee_email.lower() == requester.email.lower()
        and not _email_shared(requester)
    )


def _email_shared(requester: User) -> bool:
    """Another active account has the same address: a provider that knows people by address cannot tell
    which of them it means (an identity provider may assert any address it likes)."""
    return User.objects.filter(email__iexact=requester.email, is_active=True).exclude(pk=requester.pk).exists()


def _provider_checks(role: Role, requester: User, starts_at: datetime | None, now: datetime) -> dict[int, list]:
    if role.approvals_required == 0 or (starts_at is not None and starts_at > now + timedelta(minutes=1)):
        return {}
    answers: dict[int, list] = {}
    reassigned: str | None = None  # computed once, for the first rule that asks the provider
    for rule in role.auto_approval_rules.select_related("oncall_provider"):
        if not policies.rule_needs_provider(rule) or not policies.rule_static_match(rule, role, requester, now):
            continue
        provider = rule.oncall_provider
        if provider is None or not provider.is_active:
            answers[rule.pk] = [pagerduty.Check(False, "No active on-call provider is configured for it.")]
            continue
        reassigned = reassigned if reassigned is not None else _email_set_by_someone_else(requester, now)
        if reassigned:
            answers[rule.pk] = [pagerduty.Check(False, reassigned)]
            continue
        checks = []
        try:
            if rule.oncall_escalation_policy:
                checks.append(
                    pagerduty.check_on_call(
                        provider,
                        email=requester.email,
                        escalation_policy=rule.oncall_escalation_policy,
                        max_level=rule.oncall_max_level,
                    )
                )
            if rule.incident_service:
                checks.append(
                    pagerduty.check_incident(
                        provider,
                        email=requester.email,
                        service=rule.incident_service,
                        min_priority=rule.incident_min_priority,
                    )
                )
        except ProviderError as error:
            logger.warning("on-call provider %s failed for rule %s: %s", provider.pk, rule.pk, error)
            checks = [pagerduty.Check(False, f"{error} Sent to approvers instead.")]
        for check in checks:
            if check.ok and check.ends_at is not None and check.ends_at - now < timedelta(minutes=5):
                checks = [pagerduty.Check(False, "Your on-call shift ends in less than 5 minutes.")]
                break
        answers[rule.pk] = checks
    return answers


def _email_set_by_someone_else(requester: User, now: datetime) -> str:
    """The provider knows people by email: an address an admin set lately (not the person, not the identity
    provider's SCIM account), or one another active account has too, could be someone else's who is on call.
    Then on-call rules do not approve (the request goes to approvers, with the reason); "" otherwise."""
    if requester.email and _email_shared(requester):
        return (
            f"Another AccessGov account has your email address ({requester.email}): the on-call provider cannot "
            "tell which of you it means. Sent to approvers instead."
        )
    changed = permissions.recent_email_change(requester, now)
    if changed is None or changed[1] is None or changed[1].pk == requester.pk or changed[1].is_service_account:
        return ""
    return (
        f"Your email address was set on {changed[0]:%Y-%m-%d} by {changed[1].get_username()}: on-call rules trust it "
        f"after {settings.FOUR_EYES_INDEPENDENCE_DAYS} days. Sent to approvers instead."
    )


def external_checks(
    role: Role, requester: User, *, ticket: str, starts_at: datetime | None, now: datetime, on_call: bool = True
) -> ExternalChecks:
    """Ask the role's ticket provider and (``on_call``) on-call provider (no transaction open). Raises
    PolicyViolation for a ticket that is missing, closed, elsewhere, not the requester's, or cannot be
    confirmed; never raises for the on-call provider (its failures become not-matching checks). An
    extension asks the ticket provider only: on-call rules, whose grants end with the shift, do not
    approve extensions."""
    provider, issue = _ticket_check(role, requester, ticket)
    checks = _provider_checks(role, requester, starts_at, now) if on_call else {}
    return ExternalChecks(provider_checks=checks, issue=issue, ticket_provider=provider)


# --- Ending bound grants ---------------------------------------------------------------------------


def _end_grants(grant_ids: list[int], *, end_reason: str, event_type: str, reason: str, data: dict, job: str) -> int:
    ended = 0
    for grant_id in grant_ids:
        try:
            grant_services.grant_revoke_by_system(
                grant_id, reason=reason, job=job, end_reason=end_reason, event_type=event_type, data=data
            )
            ended += 1
        except TransitionNotAllowed:
            continue  # ended meanwhile
    return ended


def _ticket_bound_grants(provider: TicketProvider, key: str | None = None):
    grants = Grant.objects.current().filter(access_request__ticket_bound=True, access_request__ticket_provider=provider)
    return grants.filter(access_request__ticket__iexact=key) if key else grants


def ticket_recheck(provider: TicketProvider, key: str, *, job: str) -> int:
    """Read ``key`` from the provider; if it is closed or gone, end every current grant bound to it
    (``grant.ticket_closed``). Returns how many ended. Raises ProviderError (nothing ends: the grant
    still ends at its expiry, and the next sweep asks again)."""
    grant_ids = list(_ticket_bound_grants(provider, key).values_list("pk", flat=True))
    if not grant_ids:
        return 0
    issue = tickets.issue_get(provider, key)
    if issue.exists and issue.is_open:
        return 0
    status = issue.status if issue.exists else "no longer exists"
    return _end_grants(
        grant_ids,
        end_reason=Grant.EndReason.TICKET_CLOSED,
        event_type=Type.GRANT_TICKET_CLOSED,
        reason=f"Ticket {key} closed ({status}).",
        data={"provider": provider.name, "ticket": key, "ticket_status": status, "exists": issue.exists},
        job=job,
    )


def ticket_webhook_received(provider: TicketProvider, key: str) -> int:
    """A signed webhook (Jira's, or GitHub's ``issues`` delivery) said ``key`` changed: read it back from
    the provider and end what it bound if it closed."""
    return ticket_recheck(provider, key, job=f"{provider.kind}-webhook")


def _sweep_tickets() -> int:
    ended = 0
    pairs = (
        Grant.objects.current()
        .filter(access_request__ticket_bound=True, access_request__ticket_provider__is_active=True)
        .values_list("access_request__ticket_provider_id", "access_request__ticket")
        .distinct()
        .order_by("access_request__ticket_provider_id", "access_request__ticket")[:MAX_TICKETS_PER_SWEEP]
    )
    providers = {p.pk: p for p in TicketProvider.objects.filter(is_active=True)}
    for provider_id, key in pairs:
        try:
            ended += ticket_recheck(providers[provider_id], key, job="integrations-sweep")
        except ProviderError as error:
            logger.warning("ticket provider %s: %s", provider_id, error)
    return ended


def _sweep_incidents() -> int:
    ended = 0
    pairs = (
        Grant.objects.current()
        .filter(access_request__incident_provider__is_active=True)
        .exclude(access_request__incident_id="")
        .values_list("access_request__incident_provider_id", "access_request__incident_id")
        .distinct()
        .order_by("access_request__incident_provider_id", "access_request__incident_id")[:MAX_INCIDENTS_PER_SWEEP]
    )
    providers = {p.pk: p for p in OnCallProvider.objects.filter(is_active=True)}
    for provider_id, incident_id in pairs:
        provider = providers[provider_id]
        try:
            status = pagerduty.incident_status(provider, incident_id)
        except ProviderError as error:
            logger.warning("on-call provider %s: %s", provider_id, error)
            continue
        if status != "resolved":
            continue
        grant_ids = list(
            Grant.objects.current()
            .filter(access_request__incident_provider=provider, access_request__incident_id=incident_id)
            .values_list("pk", flat=True)
        )
        ended += _end_grants(
            grant_ids,
            end_reason=Grant.EndReason.INCIDENT_RESOLVED,
            event_type=Type.GRANT_INCIDENT_RESOLVED,
            reason=f"Incident {incident_id} was resolved.",
            data={"provider": provider.name, "incident": incident_id, "incident_status": status},
            job="integrations-sweep",
        )
    return ended


def integrations_sweep(now: datetime | None = None) -> dict[str, int]:
    """One pass (beat): end grants whose ticket closed or incident resolved, bring Slack messages of
    requests decided without a notification (cancelled) up to date, and prune replay guards. Provider
    failures are logged and retried next pass; they never end or extend anything."""
    now = now or clock.now()
    stale = list(
        SlackMessage.objects.filter(shown_state__startswith="pending")
        .exclude(access_request__in=AccessRequest.objects.pending_at(now))  # lapsed at its deadline, swept or not
        .values_list("access_request_id", flat=True)[:100]
    )
    for access_request_id in stale:
        after_commit.send("slack_sync", access_request_id)
    pruned = SlackRequestSeen.objects.filter(seen_at__lt=now - SLACK_SEEN_KEEP).delete()[0]
    # An identity token's use is kept a day after the token it bought expired: longer than any identity token
    # accepted lives (oidc_trust.MAX_IDENTITY_TOKEN_SECONDS), so none is exchanged twice.
    OidcTokenUse.objects.filter(token_expires_at__lt=now - timedelta(days=1)).delete()
    return {
        "ticket_closed": _sweep_tickets(),
        "incident_resolved": _sweep_incidents(),
        "slack_resynced": len(stale),
        "slack_seen_pruned": pruned,
    }


# --- Slack ---------------------------------------------------------------------------------------


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def slack_link_code_create(user: User, *, step_up_at: datetime | None) -> str:
    """A one-time code (shown once, only its hash kept) that links the Slack user who types it to
    ``user``. Needs a TOTP code entered just now (``step_up_at``): a link lets Slack act as the person."""
    now = clock.now()
    otp.ensure_step_up(step_up_at, now, action="Linking Slack")
    code = "-".join(secrets.token_hex(3).upper() for _ in range(3))
    with transaction.atomic():
        SlackLinkCode.objects.filter(user=user, used_at__isnull=True).update(used_at=now)  # one live code
        SlackLinkCode.objects.create(
            user=user,
            code_hash=_hash(code),
            created_at=now,
            expires_at=now + timedelta(minutes=settings.SLACK_LINK_CODE_MINUTES),
        )
    return code


def slack_link_consume(workspace: SlackWorkspace, slack_user_id: str, code: str) -> SlackUserLink:
    """The Slack user typed a link code: spend it (once, before it expires) and link them to the code's
    owner (replacing either side's previous link), with a ``slack.linked`` event. Raises PolicyViolation."""
    now = clock.now()
    normalized = code.strip().upper().replace(" ", "")
    with transaction.atomic():
        link_code = (
            SlackLinkCode.objects.select_for_update(of=("self",))
            .select_related("user")
            .filter(code_hash=_hash(normalized), used_at__isnull=True, expires_at__gt=now)
            .first()
        )
        if link_code is None or not link_code.user.is_active or link_code.user.is_service_account:
            raise PolicyViolation("That code is not valid (or was used, or has expired). Make a new one in AccessGov.")
        link_code.used_at = now
        link_code.save(update_fields=["used_at"])
        SlackUserLink.objects.filter(
            Q(workspace=workspace) & (Q(slack_user_id=slack_user_id) | Q(user=link_code.user))
        ).delete()
        link = SlackUserLink.objects.create(
            workspace=workspace, slack_user_id=slack_user_id, user=link_code.user, linked_at=now
        )
        event_record(
            Type.SLACK_LINKED,
            actor=link_code.user,
            job=None,
            reason=f"Slack user {slack_user_id} in {workspace.name} acts as {link_code.user.get_username()}.",
            data={"workspace": workspace.team_id, "slack_user_id": slack_user_id},
        )
    return link


def slack_unlink(user: User, link_id: int) -> bool:
    """A person removes their own Slack link, with a ``slack.unlinked`` event. False when there was none."""
    with transaction.atomic():
        link = (
            SlackUserLink.objects.select_for_update().select_related("workspace").filter(pk=link_id, user=user).first()
        )
        if link is None:
            return False
        event_record(
            Type.SLACK_UNLINKED,
            actor=user,
            reason=f"Slack user {link.slack_user_id} in {link.workspace.name} no longer acts as {user.get_username()}.",
            data={"workspace": link.workspace.team_id, "slack_user_id": link.slack_user_id},
        )
        link.delete()
    return True


def slack_linked_user(workspace: SlackWorkspace, slack_user_id: str) -> User | None:
    link = SlackUserLink.objects.select_related("user").filter(workspace=workspace, slack_user_id=slack_user_id).first()
    if link is None or not link.user.is_active:
        return None
    return link.user


def ticket_delivery_seen(provider: TicketProvider, delivery_id: str) -> bool:
    """Record a verified webhook delivery (GitHub's ``X-GitHub-Delivery`` id); True if it was already
    handled (a replay). The Slack replay guard's table holds it (a hash, pruned by the sweep like Slack's);
    a replay after that only triggers a re-check, which reads the ticket back anyway."""
    try:
        with transaction.atomic():
            SlackRequestSeen.objects.create(signature_hash=_hash(f"ticket:{provider.pk}:{delivery_id}"))
    except IntegrityError:
        return True
    return False


def slack_request_seen(timestamp: str, signature: str) -> bool:
    """Record a verified Slack request; True if it was already handled (a replay)."""
    try:
        with transaction.atomic():
            SlackRequestSeen.objects.create(signature_hash=_hash(f"{timestamp}:{signature}"))
    except IntegrityError:
        return True
    return False


def slack_request_sync(access_request_id: int) -> str:
    """Post the approval message for a pending request, or update it for everyone to the request's
    current state (decided anywhere: portal, API, Slack, the sweep; lapsed at its deadline before the sweep
    records it, ``AccessRequest.status_at``). Idempotent; raises on Slack errors (the task retries). Returns
    what was done."""
    now = clock.now()

    workspace = SlackWorkspace.objects.filter(is_active=True).order_by("pk").first()
    access_request = (
        AccessRequest.objects.select_related("role__system", "requester").filter(pk=access_request_id).first()
    )
    if workspace is None or access_request is None or access_request.kind == AccessRequest.Kind.BREAK_GLASS:
        return "nothing"
    state = slack.state_of(access_request, now)
    message = SlackMessage.objects.filter(access_request=access_request, workspace=workspace).first()
    if message is None:
        if not access_request.is_pending_at(now):
            return "nothing"
        try:
            with transaction.atomic():
                message = SlackMessage.objects.create(
                    access_request=access_request, workspace=workspace, channel=workspace.channel, ts=""
                )
        except IntegrityError:
            return "nothing"  # another task is posting it
        try:
            channel, ts = slack.post_request(workspace, access_request, now)
        except Exception:
            message.delete()
            raise
        SlackMessage.objects.filter(pk=message.pk).update(channel=channel, ts=ts, shown_state=state)
        return "posted"
    if not message.ts or message.shown_state == state:
        return "nothing"
    slack.update_request(workspace, message, access_request, now)
    SlackMessage.objects.filter(pk=message.pk).update(shown_state=state)
    return "updated"


# --- OIDC ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExchangedToken:
    secret: str
    token: ApiToken
    claims: dict


def oidc_token_exchange(id_token: str, *, client_address: str | None = None) -> ExchangedToken:
    """``oidc_trust.verify`` then ``oidc_token_issue``. Raises oidc_trust.TokenRefused / ProviderError /
    PolicyViolation."""

    policy, claims = oidc_trust.verify(id_token)
    return oidc_token_issue(policy, claims, client_address=client_address)


def oidc_token_issue(policy, claims: dict, *, client_address: str | None = None) -> ExchangedToken:
    """A verified CI identity (``oidc_trust.verify``: signature against the issuer's keys, expiry,
    audience, required claims) becomes a short-lived service token: used once (issuer + jti), for a pure
    service account, limited to the policy's roles and scopes, living the policy's lifetime (≤ 1 h).
    Records ``token.oidc_exchanged`` with the claims it relied on, in the token's transaction. Raises
    PolicyViolation (already exchanged, not a pure service account, no role)."""
    problem = token_services.service_account_problem(policy.service_account)
    if problem:
        raise PolicyViolation(problem)
    now = clock.now()
    expires_at = now + policy.token_lifetime
    roles = list(Role.objects.filter(pk__in=policy.role_ids))
    if not roles:
        raise PolicyViolation("The trust policy names no existing role.")
    kept_claims = {
        name: claims.get(name)
        for name in (
            "iss",
            "aud",
            "sub",
            "jti",
            "repository",
            "repository_owner",
            "ref",
            "environment",
            "workflow",
            "workflow_ref",
            "job_workflow_ref",
            "sha",
            "run_id",
            "run_attempt",
            "actor",
            "project_path",
            "pipeline_id",
        )
        if claims.get(name) is not None
    }
    secret = token_services.new_service_secret()
    try:
        with transaction.atomic():
            OidcTokenUse.objects.create(
                policy=policy,
                issuer=str(claims["iss"])[:200],
                jti=claims["jti"],  # text of at most 200 characters (oidc_trust.verify)
                used_at=now,
                token_expires_at=expires_at,
            )
            token = ApiToken.objects.create(
                user=policy.service_account,
                kind=ApiToken.Kind.SERVICE,
                name=f"OIDC {policy.name}: {kept_claims.get('repository') or kept_claims.get('sub', '')}"[:100],
                key_hash=token_services.hash_secret(secret),
                display_prefix=secret[:10],
                scopes=list(policy.scopes),
                created_at=now,
                expires_at=expires_at,
            )
            token.roles.set(roles)
            event_record(
                Type.TOKEN_OIDC_EXCHANGED,
                actor=policy.service_account,
                client_address=client_address,
                reason=f"Identity token from {claims['iss']} accepted by trust policy {policy.name}.",
                data={
                    "trust_policy": policy.name,
                    "trust_policy_id": policy.pk,
                    "api_token_id": token.pk,
                    "expires_at": expires_at.isoformat(),
                    "claims": kept_claims,
                },
            )
    except IntegrityError:
        raise PolicyViolation("This identity token was already exchanged; ask the CI for a new one.") from None
    return ExchangedToken(secret=secret, token=token, claims=kept_claims)
