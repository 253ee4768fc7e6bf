"""What goes in and out of the API. Output serializers are read-only views of the models; input
serializers name exactly what a caller may send and refuse anything else (server-owned fields such
as status, requester, expiry or approver can never be set through a body)."""

from datetime import timedelta

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accessgov import clock, inputs
from accessgov.models import AccessEvent, AccessRequest, Decision, Eligibility, EvidencePack, Grant, Role, System

MAX_DURATION_SECONDS = int(inputs.MAX_DURATION.total_seconds())


class StrictSerializer(serializers.Serializer):
    """Refuses unknown fields with a 400 naming them, instead of silently ignoring them."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {name: ["Unknown field: it is not accepted here (server-owned or misspelt)."] for name in unknown}
                )
        return super().to_internal_value(data)


class WholeNumberField(serializers.IntegerField):
    """A JSON integer (not a string, a float or a boolean: DRF's IntegerField takes "١٢" and 1.0)."""

    default_error_messages = {"invalid": "A whole number (a JSON integer) is required."}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


def _seconds(value: timedelta | None) -> int | None:
    return int(value.total_seconds()) if value is not None else None


# --- Catalogue ---------------------------------------------------------------------------------


class SystemSerializer(serializers.ModelSerializer):
    class Meta:
        model = System
        fields = ["id", "slug", "name", "environment", "description"]
        read_only_fields = fields


class SystemRefSerializer(serializers.ModelSerializer):
    class Meta:
        model = System
        fields = ["id", "slug", "name"]
        read_only_fields = fields


class RoleRefSerializer(serializers.ModelSerializer):
    system = SystemRefSerializer(read_only=True)
    path = serializers.SerializerMethodField(help_text='"system-slug/role-name", as the CLI accepts it.')

    class Meta:
        model = Role
        fields = ["id", "name", "path", "risk_tier", "system"]
        read_only_fields = fields

    def get_path(self, role: Role) -> str:
        return f"{role.system.slug}/{role.name}"


class RoleSerializer(RoleRefSerializer):
    default_duration_seconds = serializers.SerializerMethodField()
    max_duration_seconds = serializers.SerializerMethodField()
    pending_timeout_seconds = serializers.SerializerMethodField()
    eligible = serializers.SerializerMethodField(help_text="The caller may request this role now.")

    class Meta:
        model = Role
        fields = [
            *RoleRefSerializer.Meta.fields,
            "description",
            "default_duration_seconds",
            "max_duration_seconds",
            "approvals_required",
            "ticket_required",
            "ticket_pattern",
            "step_up_required",
            "break_glass_allowed",
            "pending_timeout_seconds",
            "eligible",
        ]
        read_only_fields = fields

    def get_default_duration_seconds(self, role: Role) -> int:
        return _seconds(role.default_duration)

    def get_max_duration_seconds(self, role: Role) -> int:
        return _seconds(role.max_duration)

    def get_pending_timeout_seconds(self, role: Role) -> int:
        return _seconds(role.pending_timeout)

    def get_eligible(self, role: Role) -> bool:
        return role.pk in self.context.get("eligible_role_ids", set())


class EligibilitySerializer(serializers.ModelSerializer):
    role = RoleRefSerializer(read_only=True)
    user = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    group = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)

    class Meta:
        model = Eligibility
        fields = ["id", "role", "user", "group", "starts_at", "ends_at"]
        read_only_fields = fields


# --- Requests, decisions, grants ---------------------------------------------------------------


class GrantRefSerializer(serializers.ModelSerializer):
    active = serializers.SerializerMethodField(help_text="Gives access right now (state active and before expires_at).")
    # Declared so the schema says what is sent: "" until the grant ends (a read-only model field loses allow_blank).
    end_reason = serializers.ChoiceField(
        choices=Grant.EndReason.choices, allow_blank=True, read_only=True, help_text='Why it ended; "" until it ends.'
    )

    class Meta:
        model = Grant
        fields = ["id", "status", "active", "starts_at", "expires_at", "ended_at", "end_reason"]
        read_only_fields = fields

    def get_active(self, grant: Grant) -> bool:
        return grant.is_active_at(clock.now())

    def to_representation(self, grant: Grant) -> dict:
        """What the grant is now, as every reader sees it: an expiry the sweeper has not reached yet is
        ``expired`` with its ``expires_at`` as ``ended_at`` (the stored row catches up when it runs)."""
        data = super().to_representation(grant)
        now = clock.now()
        data["status"] = grant.status_at(now)
        data["active"] = data["status"] == Grant.Status.ACTIVE  # the same instant as the status (is_active_at)
        ended_at = grant.ended_at_as_of(now)
        data["ended_at"] = serializers.DateTimeField().to_representation(ended_at) if ended_at else None
        data["end_reason"] = grant.end_reason_at(now)
        return data


class GrantSerializer(GrantRefSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)
    role = RoleRefSerializer(read_only=True)

    class Meta:
        model = Grant
        fields = [
            *GrantRefSerializer.Meta.fields,
            "access_request",
            "user",
            "role",
            "is_break_glass",
            "extension_count",
            "provisioning_state",
        ]
        read_only_fields = fields


class DecisionSerializer(serializers.ModelSerializer):
    approver = serializers.SlugRelatedField(slug_field="username", read_only=True)
    duration_seconds = serializers.SerializerMethodField()

    class Meta:
        model = Decision
        fields = ["approver", "outcome", "comment", "duration_seconds", "step_up_at", "created_at"]
        read_only_fields = fields

    def get_duration_seconds(self, decision: Decision) -> int | None:
        return _seconds(decision.duration)


class AccessRequestSerializer(serializers.ModelSerializer):
    requester = serializers.SlugRelatedField(slug_field="username", read_only=True)
    role = RoleRefSerializer(read_only=True)
    requested_duration_seconds = serializers.SerializerMethodField()
    approved_duration_seconds = serializers.SerializerMethodField()
    approvals_required = serializers.IntegerField(source="role.approvals_required", read_only=True)
    decisions = DecisionSerializer(many=True, read_only=True)
    grant = serializers.SerializerMethodField(
        help_text="Once approved: the grant it produced, or for an extension the grant it extended (with its new end)."
    )
    extends_grant = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True, help_text="For an extension: the id of the grant it asks to extend."
    )

    class Meta:
        model = AccessRequest
        fields = [
            "id",
            "kind",
            "extends_grant",
            "status",
            "requester",
            "role",
            "requested_duration_seconds",
            "approved_duration_seconds",
            "starts_at",
            "justification",
            "ticket",
            "created_at",
            "lapses_at",
            "decided_at",
            "auto_approved_by_rule",
            "approvals_required",
            "decisions",
            "grant",
        ]
        read_only_fields = fields

    def to_representation(self, access_request: AccessRequest) -> dict:
        """What the request is now, as every reader sees it: a pending request at or past its ``lapses_at`` is
        ``lapsed`` (decided at its deadline, as the sweep records it) before the sweep has come by."""
        data = super().to_representation(access_request)
        now = clock.now()
        data["status"] = access_request.status_at(now)
        decided_at = access_request.decided_at_as_of(now)
        data["decided_at"] = serializers.DateTimeField().to_representation(decided_at) if decided_at else None
        return data

    def get_requested_duration_seconds(self, access_request: AccessRequest) -> int:
        return _seconds(access_request.requested_duration)

    def get_approved_duration_seconds(self, access_request: AccessRequest) -> int | None:
        return _seconds(access_request.approved_duration)

    @extend_schema_field(GrantRefSerializer(allow_null=True))
    def get_grant(self, access_request: AccessRequest):
        if access_request.status != AccessRequest.Status.APPROVED:
            return None
        if access_request.kind == AccessRequest.Kind.EXTENSION:
            grant = access_request.extends_grant
        else:
            grant = getattr(access_request, "grant", None)
        return GrantRefSerializer(grant).data if grant else None


class AccessRequestCreateSerializer(StrictSerializer):
    """Name the role with exactly one of role_id and role (both, or neither, is a 400)."""

    role_id = WholeNumberField(required=False, min_value=1, max_value=inputs.MAX_ID, help_text="The role's id …")
    role = serializers.CharField(
        required=False, max_length=250, help_text='… or its path "system-slug/role-name" (exactly one of the two).'
    )
    duration_seconds = WholeNumberField(min_value=60, max_value=MAX_DURATION_SECONDS)
    justification = serializers.CharField(max_length=5000)
    ticket = serializers.CharField(required=False, allow_blank=True, max_length=100, default="")
    starts_at = serializers.DateTimeField(required=False, allow_null=True, default=None)

    def validate(self, attrs):
        if ("role_id" in attrs) == ("role" in attrs):
            raise serializers.ValidationError({"role": ["Give exactly one of role_id and role."]})
        return attrs


class ExtensionCreateSerializer(StrictSerializer):
    """What the portal's extend form takes: how much longer, why, and a ticket when the role needs one."""

    duration_seconds = WholeNumberField(
        min_value=60,
        max_value=MAX_DURATION_SECONDS,
        help_text="How much longer; the grant may not run longer in total than the role's maximum from now.",
    )
    justification = serializers.CharField(max_length=2000, help_text="Why (at least 10 characters).")
    ticket = serializers.CharField(required=False, allow_blank=True, max_length=100, default="")


OTP_CODE_HELP = "A current code from the approver's authenticator; required for roles that need step-up."


class DecisionInputSerializer(StrictSerializer):
    comment = serializers.CharField(required=False, allow_blank=True, max_length=5000, default="")
    otp_code = serializers.RegexField(r"^[0-9]{6}$", required=False, help_text=OTP_CODE_HELP)


class ApproveInputSerializer(DecisionInputSerializer):
    duration_seconds = WholeNumberField(
        required=False, min_value=60, max_value=MAX_DURATION_SECONDS, help_text="Approve for less time."
    )


DENY_COMMENT_NEEDED = "Say why you deny the request: the requester will read it."


class DenyInputSerializer(StrictSerializer):
    comment = serializers.CharField(
        max_length=5000,
        help_text="Why (required: the requester reads it).",
        error_messages={"required": DENY_COMMENT_NEEDED, "blank": DENY_COMMENT_NEEDED},
    )
    otp_code = serializers.RegexField(r"^[0-9]{6}$", required=False, help_text=OTP_CODE_HELP)


class EmptyInputSerializer(StrictSerializer):
    """Actions that take no input; any field sent is refused."""


class AccessEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_label", read_only=True)

    class Meta:
        model = AccessEvent
        fields = [
            "id",
            "sequence",
            "occurred_at",
            "event_type",
            "actor",
            "client_address",
            "reason",
            "access_request",
            "grant",
            "role",
            "data",
            "hash",
        ]
        read_only_fields = fields


# --- Evidence packs (auditors) ----------------------------------------------------------------------


class EvidencePackSerializer(serializers.ModelSerializer):
    systems = serializers.SlugRelatedField(slug_field="slug", many=True, read_only=True)
    requested_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    schedule = serializers.CharField(
        read_only=True, help_text='"monthly" or "quarterly" for a scheduled pack, else "".'
    )
    download_url = serializers.SerializerMethodField(help_text="GET it (token with evidence:read) once ready.")

    class Meta:
        model = EvidencePack
        fields = [
            "id",
            "since",
            "until",
            "systems",
            "schedule",
            "status",
            "progress",
            "step",
            "requested_by",
            "created_at",
            "finished_at",
            "file_name",
            "file_size",
            "file_sha256",
            "manifest_sha256",
            "key_fingerprint",
            "ledger_head_sequence",
            "ledger_head_hash",
            "sample_seed",
            "summary",
            "error",
            "delivered_at",
            "delivered_to",
            "download_url",
        ]
        read_only_fields = fields

    def get_download_url(self, pack: EvidencePack) -> str | None:
        if pack.status != EvidencePack.Status.READY:
            return None
        return f"/api/v1/evidence-packs/{pack.pk}/download/"


class EvidencePackCreateSerializer(StrictSerializer):
    since = serializers.DateField(help_text="First day of the period (UTC).")
    until = serializers.DateField(help_text="Last day of the period (UTC, included).")
    systems = serializers.ListField(
        child=serializers.SlugField(max_length=100),
        required=False,
        max_length=500,
        help_text="System slugs; empty or absent: every system.",
    )
