"""AccessGov data: people, the systems they need access to, and the roles on those systems — one module per
area, every model re-exported here so ``from accessgov.models import X`` works everywhere (as NetBox and
Zulip do). Models import no services and no views."""

# Identity (issue 20) and integrations (docs/INTEGRATIONS.md) keep their models in their own packages.
from accessgov.identity.models import (
    ExternalIdentity,
    IdentityGroup,
    IdentityProvider,
    IdentityProviderMFA,
)
from accessgov.integrations.models import (
    MAX_OIDC_TOKEN_LIFETIME,
    OidcTokenUse,
    OidcTrustPolicy,
    OnCallProvider,
    SlackLinkCode,
    SlackMessage,
    SlackRequestSeen,
    SlackUserLink,
    SlackWorkspace,
    TicketProvider,
)
from accessgov.models.accounts import ServiceAccount, User, new_session_stamp
from accessgov.models.activity import (
    ActivityCaptureState,
    ActivityFinding,
    ActivityIngestBatch,
    ActivityRecord,
    ActivitySeal,
    GrantActivity,
)
from accessgov.models.catalog import AutoApprovalRule, Eligibility, EligibilityQuerySet, Role, System
from accessgov.models.changes import ChangeRequest
from accessgov.models.events import AccessEvent, LedgerCheckpoint
from accessgov.models.evidence import EvidencePack
from accessgov.models.grants import BreakGlassFollowUp, DriftFinding, Grant, GrantQuerySet, OutboxItem
from accessgov.models.inbox import InboxReadMark
from accessgov.models.operations import JobRun, SchedulerLease
from accessgov.models.requests import AccessRequest, Decision
from accessgov.models.reviews import ReviewCampaign, ReviewItem
from accessgov.models.tokens import ApiToken
from accessgov.models.webhooks import (
    EventWebhookSubscription,
    NotificationDelivery,
    QueuedNotification,
    WebhookDelivery,
)

__all__ = [
    "MAX_OIDC_TOKEN_LIFETIME",
    "AccessEvent",
    "AccessRequest",
    "ActivityCaptureState",
    "ActivityFinding",
    "ActivityIngestBatch",
    "ActivityRecord",
    "ActivitySeal",
    "ApiToken",
    "AutoApprovalRule",
    "BreakGlassFollowUp",
    "ChangeRequest",
    "Decision",
    "DriftFinding",
    "Eligibility",
    "EligibilityQuerySet",
    "EventWebhookSubscription",
    "EvidencePack",
    "ExternalIdentity",
    "Grant",
    "GrantActivity",
    "GrantQuerySet",
    "IdentityGroup",
    "IdentityProvider",
    "IdentityProviderMFA",
    "InboxReadMark",
    "JobRun",
    "LedgerCheckpoint",
    "NotificationDelivery",
    "OidcTokenUse",
    "OidcTrustPolicy",
    "OnCallProvider",
    "OutboxItem",
    "QueuedNotification",
    "ReviewCampaign",
    "ReviewItem",
    "Role",
    "SchedulerLease",
    "ServiceAccount",
    "SlackLinkCode",
    "SlackMessage",
    "SlackRequestSeen",
    "SlackUserLink",
    "SlackWorkspace",
    "System",
    "TicketProvider",
    "User",
    "WebhookDelivery",
    "new_session_stamp",
]
