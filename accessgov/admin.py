from datetime import timedelta

from django import forms
from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import display_for_value, unquote
from django.contrib.admin.widgets import AdminURLFieldWidget
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import DateTimeField, URLField
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from accessgov import clock, inputs, otp, permissions, policies
from accessgov.activity import config as activity_config
from accessgov.admin_base import (
    TYPED_INPUT_OVERRIDES,
    FourEyesAdminMixin,
    GuardedModelAdmin,
    ReadOnlyAdmin,
    RefusalAsMessageMixin,
    _ensure_pk,
    act_on_each,
)
from accessgov.connectors import connector_for
from accessgov.exceptions import AccessGovError
from accessgov.integrations.http import url_problems
from accessgov.models import (
    AccessEvent,
    AccessRequest,
    ApiToken,
    AutoApprovalRule,
    BreakGlassFollowUp,
    ChangeRequest,
    Decision,
    DriftFinding,
    Eligibility,
    EventWebhookSubscription,
    Grant,
    OidcTrustPolicy,
    OnCallProvider,
    OutboxItem,
    Role,
    ServiceAccount,
    SlackUserLink,
    SlackWorkspace,
    System,
    TicketProvider,
    User,
    WebhookDelivery,
)
from accessgov.services import changes as change_services
from accessgov.services import eligibility as eligibility_services
from accessgov.services import grants as grant_services
from accessgov.services import tokens as token_services
from accessgov.services import usernames
from accessgov.services import users as user_services
from accessgov.services import webhooks as webhook_services

admin.site.site_header = "AccessGov administration"
admin.site.site_title = "AccessGov admin"


SELF_WIDENING_FIELDS = ("groups", "user_permissions", "is_staff", "is_superuser")
# What providers know a person by: PagerDuty's on-call and incident checks and Jira's assignee match the e-mail
# address, GitHub's the username. An admin who could re-point their own at the person on call would pass those
# checks, and be auto-approved, with nobody else involved.
SELF_IDENTITY_FIELDS = ("username", "email")
SELF_IDENTITY_PROBLEM = (
    "Nobody changes their own username or e-mail address here: providers (PagerDuty, Jira, GitHub) know people "
    "by them. Ask another admin."
)


class AccountRightsMixin(RefusalAsMessageMixin):
    """Rights that widen what an account may do — staff, superuser, groups, model permissions — are
    proposed as a four-eyes change (services.changes) when saved; what narrows them is applied at once and
    recorded as a change all the same (change.proposed + change.applied, narrowing). Nobody widens their
    own account (the form refuses it)."""

    def _widening_response(self, request, response_default):
        if getattr(request, "_four_eyes_change", None) is not None:
            return FourEyesAdminMixin._proposed_response(self, request)
        return response_default()

    def response_add(self, request, obj, post_url_continue=None):
        return self._widening_response(request, lambda: super(AccountRightsMixin, self).response_add(request, obj))

    def response_change(self, request, obj):
        return self._widening_response(request, lambda: super(AccountRightsMixin, self).response_change(request, obj))


def _split_m2m(form, name: str, current) -> tuple[list, list]:
    """(added, removed) for a many-to-many field of ``form`` against the ``current`` objects."""
    if name not in form.fields or name not in form.changed_data:
        return [], []
    submitted, current = set(form.cleaned_data.get(name) or []), set(current)
    return sorted(submitted - current, key=lambda o: o.pk), sorted(current - submitted, key=lambda o: o.pk)


admin.site.unregister(Group)


@admin.register(Group)
class AccessGovGroupAdmin(AccountRightsMixin, GroupAdmin):
    """Groups: permissions added to a group wait for a second admin, permissions taken away are applied at
    once and recorded (``change_narrow_group_permissions``); deleting a group is every member leaving it,
    recorded (``users.group_delete``); nobody changes the permissions of a group they belong to."""

    def get_form(self, request, obj=None, **kwargs):
        form_class = super().get_form(request, obj, **kwargs)
        problem = permissions.rights_change_problem(request.user, group=obj) if obj is not None else None

        class GuardedGroupForm(form_class):
            def clean(self):
                data = super().clean()
                if problem and "permissions" in self.changed_data:
                    raise ValidationError(problem)
                return data

        return GuardedGroupForm

    def save_related(self, request, form, formsets, change):
        group = form.instance
        address = getattr(request, "client_address", None)
        added, removed = _split_m2m(form, "permissions", group.permissions.all() if change else [])
        narrowed = change_services.change_narrow_group_permissions(
            request.user, group=group, remove_permissions=removed, client_address=address
        )
        request._four_eyes_change = (
            change_services.change_propose_group_permissions(
                request.user, group=group, add_permissions=added, client_address=address
            )
            or narrowed
        )

    def get_deleted_objects(self, objs, request):
        # A group the service would refuse to delete is shown as protected on Django's confirmation page, with the
        # reason: nothing is deleted then (the bulk action deleted the others and counted the refused one).
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        problems = [user_services.group_delete_problem(request.user, group) for group in objs]
        return deleted, model_count, perms_needed, [*protected, *(p for p in problems if p)]

    def delete_model(self, request, obj):
        user_services.group_delete(request.user, obj.pk, client_address=getattr(request, "client_address", None))

    def delete_queryset(self, request, queryset):
        address = getattr(request, "client_address", None)
        act_on_each(
            self,
            request,
            list(queryset),
            lambda group: user_services.group_delete(request.user, group.pk, client_address=address),
        )


@admin.register(User)
class AccessGovUserAdmin(AccountRightsMixin, UserAdmin):
    """Users. New accounts remember who created them; staff, superuser, groups and permissions that widen
    an account wait for a second admin (services.changes), narrowing applies at once. Deactivation goes
    through services.users (sessions ended, grants revoked, requests withdrawn, tokens revoked), and so
    does removing someone from a group (user_groups_leave: the same mover path as SCIM); nobody
    widens their own rights. Service accounts have no password to set."""

    list_display = ("username", "email", "first_name", "last_name", "is_active", "is_staff", "is_service_account")
    list_filter = (*UserAdmin.list_filter, "is_service_account")
    # When an account was made is history (the four-eyes independence check counts accounts an admin made
    # recently), not something to edit.
    readonly_fields = ("is_service_account", "created_by", "date_joined", "last_login")
    actions = ["deactivate_users", "reactivate_users", "send_password_links", "reset_authenticators"]

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        return [*fieldsets, ("Origin", {"fields": ("is_service_account", "created_by")})]

    def get_form(self, request, obj=None, **kwargs):
        form_class = super().get_form(request, obj, **kwargs)
        problem = permissions.rights_change_problem(request.user, user=obj) if obj is not None else None
        own = obj is not None and obj.pk == request.user.pk

        class GuardedUserForm(form_class):
            def clean(self):
                data = super().clean()
                if problem and any(n in self.changed_data for n in SELF_WIDENING_FIELDS):
                    raise ValidationError(problem)
                if own and any(n in self.changed_data for n in SELF_IDENTITY_FIELDS):
                    raise ValidationError(SELF_IDENTITY_PROBLEM)
                name = data.get("username")
                renamed = name and (obj is None or name != obj.get_username())
                if renamed and (refusal := _username_refusal(name, user_id=obj.pk if obj is not None else None)):
                    self.add_error("username", refusal)
                return data

        return GuardedUserForm

    def user_change_password(self, request, id, form_url=""):
        """Your own password is set at once (as on your security page); anyone else's is proposed as an
        account recovery that another admin approves (``change_propose_account_recovery``): with a
        password they chose and an authenticator they enrolled, one admin could otherwise sign in as
        anyone and approve their own access under that person's name."""
        target = User.objects.filter(pk=_pk_or_404(User, id)).first()
        if target is not None and target.is_service_account:
            raise PermissionDenied("A service account has no password: it authenticates with its tokens only.")
        if request.method != "POST" or target is None:
            return super().user_change_password(request, id, form_url)
        if not self.has_change_permission(request, target):
            raise PermissionDenied
        form = self.change_password_form(target, request.POST)
        if not form.is_valid() or not (form.cleaned_data["set_usable_password"] or "unset-password" in request.POST):
            return super().user_change_password(request, id, form_url)  # the form's errors, as Django shows them
        usable = form.cleaned_data["set_usable_password"]
        if target.pk == request.user.pk:  # as on the security page: at once, recorded (user.password_set)
            user = user_services.user_password_change(
                request.user,
                form.cleaned_data["password1"] if usable else None,
                client_address=getattr(request, "client_address", None),
            )
            update_session_auth_hash(request, user)
            self.message_user(request, "Your password was changed." if usable else "Your password was removed.")
            meta = user._meta
            return redirect(
                reverse(f"{self.admin_site.name}:{meta.app_label}_{meta.model_name}_change", args=[user.pk])
            )
        try:
            request._four_eyes_change = change_services.change_propose_account_recovery(
                request.user,
                user=target,
                password_hash=make_password(form.cleaned_data["password1"] if usable else None),
                client_address=getattr(request, "client_address", None),
            )
        except AccessGovError as error:
            self.message_user(request, str(error), level="error")
            return redirect(request.get_full_path())
        return FourEyesAdminMixin._proposed_response(self, request)

    def save_model(self, request, obj, form, change):
        if not change:
            user_services.user_create(request.user, obj, client_address=getattr(request, "client_address", None))
            return None
        # Another person's username or address: proposed below (change_propose_user_identity), applied when a
        # second admin approves; what is saved now keeps the current ones.
        request._identity = {n: getattr(obj, n) for n in SELF_IDENTITY_FIELDS if n in form.changed_data}
        for name in request._identity:
            setattr(obj, name, form.initial.get(name, ""))
        request._widen_flags, request._narrow_flags = {}, {}
        for name in ("is_staff", "is_superuser"):
            if name in form.changed_data and getattr(obj, name):
                request._widen_flags[name] = True
                setattr(obj, name, False)  # proposed below, applied when a second admin approves
            elif name in form.changed_data:
                request._narrow_flags[name] = True
                setattr(obj, name, True)  # taken away below (user_rights_narrow), with its record
        if "is_active" not in form.changed_data:
            return super().save_model(request, obj, form, change)
        wanted = obj.is_active
        obj.is_active = not wanted  # the service flips it, with everything that goes with it
        super().save_model(request, obj, form, change)
        address = getattr(request, "client_address", None)
        if wanted:
            user_services.user_reactivate(
                request.user, obj.pk, reason="Reactivated in the admin", client_address=address
            )
        else:
            user_services.user_deactivate(
                request.user, obj.pk, reason="Deactivated in the admin", client_address=address
            )
        obj.refresh_from_db()

    def save_related(self, request, form, formsets, change):
        if not change:
            return  # the add form sets no rights
        user = form.instance
        groups_added, groups_removed = _split_m2m(form, "groups", user.groups.all())
        perms_added, perms_removed = _split_m2m(form, "user_permissions", user.user_permissions.all())
        narrow = getattr(request, "_narrow_flags", {})
        # Taken away at once and recorded as one change; leaving a group is a mover, exactly as when the
        # identity provider removes them: what depended on the group ends.
        narrowed = user_services.user_rights_narrow(
            request.user,
            user,
            remove_staff=narrow.get("is_staff", False),
            remove_superuser=narrow.get("is_superuser", False),
            remove_groups=groups_removed,
            remove_permissions=perms_removed,
            by=f"in the admin by {request.user.get_username()}",
            job="admin",
            client_address=getattr(request, "client_address", None),
        )
        flags = getattr(request, "_widen_flags", {})
        rights = change_services.change_propose_user_rights(
            request.user,
            user=user,
            make_staff=flags.get("is_staff", False),
            make_superuser=flags.get("is_superuser", False),
            add_groups=groups_added,
            add_permissions=perms_added,
            client_address=getattr(request, "client_address", None),
        )
        identity = getattr(request, "_identity", {})
        names = None
        if identity:
            names = change_services.change_propose_user_identity(
                request.user, user=user, **identity, client_address=getattr(request, "client_address", None)
            )
        request._four_eyes_change = rights or names or narrowed
        if rights and names:  # the response tells of the rights change and shows it; this one is told here
            self.message_user(request, f"Also proposed as change #{names.pk}: {names.summary}.", level="warning")
        if narrowed and (rights or names):
            self.message_user(request, f"Applied at once as change #{narrowed.pk}: {narrowed.summary}.")

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # people are deactivated, never deleted: their history stays theirs
        return actions

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Deactivate: end sessions, revoke grants, withdraw requests and tokens")
    def deactivate_users(self, request, queryset):
        """Asks first (what each account loses, and why — the reason goes into the ledger), then deactivates
        each through ``user_deactivate``."""
        people = list(queryset.filter(is_active=True).order_by("username"))
        reason = " ".join(request.POST.get("reason", "").split())
        problem = ""
        if "confirm" in request.POST:
            try:
                policies.ensure_reason_length(reason)
            except AccessGovError as error:
                problem = str(error)
            problem = problem or ("" if reason else "Say why: the reason goes into each account's record.")
        if "confirm" not in request.POST or problem:
            now = clock.now()
            context = {
                **self.admin_site.each_context(request),
                "title": f"Deactivate {len(people)} account{'' if len(people) == 1 else 's'}?",
                "people": [
                    {
                        "user": user,
                        "grants": Grant.objects.active(now).filter(user=user).count(),
                        "pending": user.access_requests.filter(status=AccessRequest.Status.PENDING).count(),
                        "tokens": user.api_tokens.filter(revoked_at__isnull=True).count(),
                    }
                    for user in people
                ],
                "queryset": people,
                "reason": reason,
                "problem": problem,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                "opts": self.model._meta,
            }
            return TemplateResponse(request, "admin/accessgov/user/deactivate_confirmation.html", context)
        address = getattr(request, "client_address", None)
        done = act_on_each(
            self,
            request,
            people,
            lambda user: user_services.user_deactivate(request.user, user.pk, reason=reason, client_address=address),
        )
        self.message_user(request, f"Deactivated {done} account(s).")
        return None

    @admin.action(description="Email a one-time link to choose a new password (another admin approves)")
    def send_password_links(self, request, queryset):
        """For someone who forgot their password: once a second admin approves, their password stops
        working, their sessions end, and they get a one-time link to choose a new one — which nobody
        else ever knows (``accessgov.recovery``)."""
        self._propose_recoveries(request, queryset, send_link=True)

    @admin.action(description="Reset authenticator: they enrol a new one at next sign-in (another admin approves)")
    def reset_authenticators(self, request, queryset):
        """For someone who lost their phone and backup codes: their authenticator and backup codes are
        removed and their sessions end once a second admin approves; they enrol a new one after their
        password at the next sign-in."""
        self._propose_recoveries(request, queryset, remove_authenticators=True)

    def _propose_recoveries(self, request, queryset, **what) -> None:
        proposed = []
        for user in queryset:
            try:
                change = change_services.change_propose_account_recovery(
                    request.user, user=user, client_address=getattr(request, "client_address", None), **what
                )
            except AccessGovError as error:
                self.message_user(request, f"{user}: {error}", level="error")
                continue
            proposed.append(
                f"#{change.pk}" if change.status == ChangeRequest.Status.PENDING else f"#{change.pk} (applied)"
            )
        if proposed:
            one = len(proposed) == 1
            self.message_user(
                request,
                f"Proposed as change{'' if one else 's'} {', '.join(proposed)}: "
                f"{'it takes' if one else 'each takes'} effect when another admin approves it.",
                level="warning",
            )

    @admin.action(description="Reactivate (restores no access)")
    def reactivate_users(self, request, queryset):
        for user in queryset.filter(is_active=False):
            user_services.user_reactivate(
                request.user,
                user.pk,
                reason="Reactivated in the admin",
                client_address=getattr(request, "client_address", None),
            )


# People's authenticators and backup codes: shown, never added, edited or removed here. django-otp's own
# admins let any admin plant a device on another person (and read their backup codes); a person enrols
# their own, and resetting someone's is the users list's "Reset authenticator" (four-eyes).
for _device_model in (TOTPDevice, StaticDevice):
    if admin.site.is_registered(_device_model):
        admin.site.unregister(_device_model)


@admin.register(TOTPDevice)
class AuthenticatorAdmin(ReadOnlyAdmin):
    """Authenticator apps (TOTP): whose, since when, last used — never the secret."""

    list_display = ("user", "name", "confirmed", "created_at", "last_used_at")
    list_filter = ("confirmed",)
    search_fields = ("user__username",)
    fields = ("user", "name", "confirmed", "created_at", "last_used_at", "throttling_failure_count")


@admin.register(StaticDevice)
class BackupCodesAdmin(ReadOnlyAdmin):
    """Backup-code sets: whose and how many are left — never the codes."""

    list_display = ("user", "name", "confirmed", "codes_left", "created_at", "last_used_at")
    search_fields = ("user__username",)
    fields = ("user", "name", "confirmed", "codes_left", "created_at", "last_used_at")
    readonly_fields = ("codes_left",)

    @admin.display(description="Codes left")
    def codes_left(self, device: StaticDevice) -> int:
        return device.token_set.count()


def _username_refusal(name: str, *, user_id: int | None = None) -> str | None:
    """A form's early look at the rule for every account's name (look-alikes, another account's name in another
    case), so the admin sees it on the field; the service checks again, under the lock, when it writes."""
    problem = usernames.username_problem(name, user_id=user_id, lock=False)
    return f"This username is refused: {problem}." if problem else None


def _pk_or_404(model, value):
    _ensure_pk(model, value)
    return unquote(str(value))


class ServiceAccountForm(forms.Form):
    username = forms.CharField(max_length=150, help_text="e.g. deploy-bot. Letters, digits and @/./+/-/_ only.")
    description = forms.CharField(max_length=150, required=False, help_text="What uses it, e.g. the CI pipeline.")

    def clean_username(self):
        name = inputs.normal_username(self.cleaned_data["username"].strip())
        if refusal := _username_refusal(name):
            raise ValidationError(refusal)
        return name


@admin.register(ServiceAccount)
class ServiceAccountAdmin(admin.ModelAdmin):
    """Service accounts: machine identities for API tokens (no password, no authenticator, never signs
    in). A new one is proposed here and exists once another admin approves it; its rights are given
    like anyone's (object permissions, eligibility), its tokens under API tokens."""

    list_display = ("username", "first_name", "is_active", "created_by", "date_joined")
    search_fields = ("username", "first_name")
    fields = ("username", "first_name", "is_active", "created_by", "date_joined")
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).filter(is_service_account=True)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return request.user.has_perm("accessgov.add_user")

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ServiceAccountForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                request._four_eyes_change = change_services.change_propose_service_account(
                    request.user,
                    username=form.cleaned_data["username"],
                    description=form.cleaned_data["description"],
                    client_address=getattr(request, "client_address", None),
                )
            except AccessGovError as error:
                form.add_error(None, str(error))
            else:
                return FourEyesAdminMixin._proposed_response(self, request)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "form": form,
            "title": "Propose a service account",
        }
        return TemplateResponse(request, "admin/accessgov/serviceaccount/add.html", context)


class ReadOnlyInline(admin.TabularInline):
    """Shown for context; edited on its own admin page, where four-eyes applies."""

    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class RoleInline(ReadOnlyInline):
    model = Role
    fields = ("name", "risk_tier", "default_duration", "max_duration", "approvals_required")


class SystemForm(forms.ModelForm):
    """Connector settings are validated by the connector; the secret is write-only (never rendered,
    and left unchanged when the field is empty)."""

    connector_secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Password or signing secret. Never shown back; leave empty to keep the current one.",
    )

    slack_webhook_url = forms.URLField(required=False, assume_scheme="https", label="Slack webhook URL")

    class Meta:
        model = System
        fields = [
            "name",
            "slug",
            "environment",
            "description",
            "slack_webhook_url",
            "connector",
            "connector_config",
            "connector_secret",
            "reconcile_remove_drift",
        ]

    def clean(self):

        data = super().clean()
        secret = data.get("connector_secret") or (self.instance.connector_secret if self.instance.pk else "")
        data["connector_secret"] = secret
        connector = data.get("connector")
        config = data.get("connector_config") or {}
        if connector:
            probe = System(connector=connector, connector_config=config, connector_secret=secret)
            klass = type(connector_for(probe))
            # Activity capture settings ride along in the connector settings (four-eyed with them).
            for problem in activity_config.problems(
                connector, config.get("activity") if isinstance(config, dict) else None
            ):
                self.add_error("connector_config", problem)
            without_activity = (
                {k: v for k, v in config.items() if k != "activity"} if isinstance(config, dict) else config
            )
            for problem in klass.validate_config(without_activity, secret):
                self.add_error("connector_config", problem)
            if klass.secret_required and not secret:
                self.add_error("connector_secret", "This connector needs a secret.")
        return data


@admin.register(System)
class SystemAdmin(FourEyesAdminMixin, GuardedModelAdmin):
    four_eyes_kind = ChangeRequest.Kind.SYSTEM
    four_eyes_fields = {
        "connector",
        "connector_config",
        "connector_secret",
        "reconcile_remove_drift",
        "slack_webhook_url",  # where the system's notifications go: a connector setting like the others
    }
    four_eyes_on_create = False  # a new system has no roles: its connector grants nothing yet
    form = SystemForm
    list_display = ("name", "environment", "connector", "slug")
    prepopulated_fields = {"slug": ("name",)}
    search_fields = ("name", "description")
    inlines = [RoleInline]


class AutoApprovalRuleInline(ReadOnlyInline):
    model = AutoApprovalRule


@admin.register(AutoApprovalRule)
class AutoApprovalRuleAdmin(FourEyesAdminMixin, admin.ModelAdmin):
    four_eyes_kind = ChangeRequest.Kind.AUTO_APPROVAL_RULE
    list_display = ("__str__", "requester_group", "window_start", "window_end", "max_risk_tier")
    list_filter = ("role__system",)


class RoleForm(forms.ModelForm):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if "step_up_required" in self.fields:
            # The model's help text cannot name the window (a setting); the form says the real number.
            minutes = otp.step_up_window_minutes()
            self.fields["step_up_required"].help_text = (
                f"Approvers must enter a TOTP code within the last {minutes} minute{'s' if minutes != 1 else ''} "
                "to decide."
            )

    def clean_ticket_pattern(self) -> str:
        pattern = self.cleaned_data["ticket_pattern"]
        if problem := policies.ticket_pattern_problem(pattern):
            raise ValidationError(problem)
        return pattern


@admin.register(Role)
class RoleAdmin(FourEyesAdminMixin, GuardedModelAdmin):
    """A new role is created directly (nobody is eligible for it yet); changes to an existing role's
    policy wait for a second admin."""

    form = RoleForm
    four_eyes_kind = ChangeRequest.Kind.ROLE
    four_eyes_fields = {
        "system",
        "risk_tier",
        "default_duration",
        "max_duration",
        "approvals_required",
        "ticket_required",
        "ticket_pattern",
        "step_up_required",
        "break_glass_allowed",
        "pending_timeout",
        "target_name",
        "ticket_provider",
        "ticket_projects",
        "ticket_issue_types",
        "ticket_assigned_to_requester",
        "ticket_bound",
        "access_level",
    }

    four_eyes_on_create = False

    list_display = ("__str__", "risk_tier", "approvals_required", "max_duration", "break_glass_allowed")
    list_filter = ("risk_tier", "system", "break_glass_allowed", "step_up_required")
    search_fields = ("name", "system__name")
    inlines = [AutoApprovalRuleInline]


class AdminDateTimePicker(inputs.DateTimePicker):
    """The browser's date-time picker in the admin too (issue 18), to the second so that saving a form
    does not move a time it did not touch; read in the admin's own zone like every typed time."""

    def __init__(self, attrs=None) -> None:
        super().__init__({"step": "1", **(attrs or {})})
        self.format = "%Y-%m-%dT%H:%M:%S"


@admin.register(Eligibility)
class EligibilityAdmin(FourEyesAdminMixin, admin.ModelAdmin):
    four_eyes_kind = ChangeRequest.Kind.ELIGIBILITY
    formfield_overrides = {
        **TYPED_INPUT_OVERRIDES,
        DateTimeField: {"form_class": inputs.DateTimeField, "widget": AdminDateTimePicker},
    }
    list_display = ("__str__", "role", "user", "group", "starts_at", "ends_at")
    list_filter = ("role__system",)
    search_fields = ("user__username", "group__name", "role__name")
    raw_id_fields = ("user",)
    readonly_fields = ("created_by", "created_at")
    actions = ["end_eligibilities"]

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    def has_delete_permission(self, request, obj=None):
        # Deleting the row wrote no access event and left its pending requests waiting: an eligibility is
        # ended (services.eligibility), and the row stays as the record of who could ask, and until when.
        return False

    @admin.action(description="End now: no new requests; pending requests that relied on it are withdrawn")
    def end_eligibilities(self, request, queryset):
        reason, address = (
            f"Ended in the admin by {request.user.get_username()}.",
            getattr(request, "client_address", None),
        )
        ended = act_on_each(
            self,
            request,
            queryset,
            lambda eligibility: eligibility_services.eligibility_end(
                request.user, eligibility.pk, reason=reason, client_address=address
            ),
        )
        self.message_user(request, f"Ended {ended} eligibilit{'y' if ended == 1 else 'ies'}.")


class RequestStatusNowFilter(admin.SimpleListFilter):
    """A request's status as every page reads it (``AccessRequest.objects.with_status_at``): pending past its
    deadline is lapsed before the sweep records it. The parameter is the one the field's own filter used, so
    saved links keep working; a value that is no status is Django's "incorrect lookup"."""

    title = "status"
    parameter_name = "status__exact"

    def lookups(self, request, model_admin):
        return AccessRequest.Status.choices

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        if value not in AccessRequest.Status.values:
            raise IncorrectLookupParameters(f"{value!r} is not a request status.")
        return queryset.with_status_at(value, clock.now())


@admin.register(AccessRequest)
class AccessRequestAdmin(ReadOnlyAdmin):
    """Requests as they are now (``AccessRequest.status_at``, ``decided_at_as_of``): the list, its filter and sort,
    and the detail say Lapsed from the deadline on, as the portal does; the detail also says when the sweep has
    not recorded it yet."""

    list_display = ("pk", "requester", "role", "kind", "status_now", "created_at")
    list_filter = (RequestStatusNowFilter, "kind", "role__system")
    search_fields = ("requester__username", "justification", "ticket")
    date_hierarchy = "created_at"
    readonly_fields = ("status_now", "decided_now")
    formfield_overrides = {URLField: {"assume_scheme": "https"}}  # its read-only form still builds the fields

    def get_queryset(self, request):
        now = clock.now()  # one instant for the row's status and its decision time
        return super().get_queryset(request).annotate_status_at(now).annotate_decided_at_as_of(now)

    def get_fields(self, request, obj=None):
        """The stored status and decision time in their places, as they are now."""
        as_now = {"status": "status_now", "decided_at": "decided_now"}
        return list(dict.fromkeys(as_now.get(name, name) for name in super().get_fields(request, obj)))

    @admin.display(description="Status", ordering="status_now")
    def status_now(self, access_request: AccessRequest) -> str:
        status = access_request.status_now  # type: ignore[attr-defined]  # annotated by get_queryset
        label = AccessRequest.Status(status).label
        return label if status == access_request.status else f"{label} (not yet recorded by the sweep)"

    @admin.display(description="Decided at", ordering="decided_now")
    def decided_now(self, access_request: AccessRequest) -> str:
        # Formatted as the admin shows a stored instant (a read-only callable's value is shown as str()).
        decided = access_request.decided_now  # type: ignore[attr-defined]  # annotated by get_queryset
        return display_for_value(decided, self.get_empty_value_display())


@admin.register(Decision)
class DecisionAdmin(ReadOnlyAdmin):
    list_display = ("access_request", "approver", "outcome", "created_at", "step_up_at")
    list_filter = ("outcome",)


@admin.register(Grant)
class GrantAdmin(ReadOnlyAdmin):
    list_display = ("pk", "user", "role", "status", "starts_at", "expires_at", "end_reason", "is_break_glass")
    list_filter = ("status", "is_break_glass", "role__system")
    search_fields = ("user__username", "role__name")
    actions = ["revoke_selected"]

    def has_change_permission(self, request, obj=None):
        # Needed for the action to be offered; the change form itself stays read-only.
        return obj is None and request.user.has_perm("accessgov.view_grant")

    @admin.action(description="Revoke selected grants now (through the lifecycle service)")
    def revoke_selected(self, request, queryset):
        address = getattr(request, "client_address", None)
        done = act_on_each(
            self,
            request,
            queryset,
            lambda grant: grant_services.grant_revoke(
                request.user, grant.pk, reason="Revoked from the admin", client_address=address
            ),
            name=lambda grant: f"Grant #{grant.pk}",
        )
        if done:
            self.message_user(request, f"Revoked {done} grant(s).")


@admin.register(BreakGlassFollowUp)
class BreakGlassFollowUpAdmin(ReadOnlyAdmin):
    list_display = ("grant", "due_at", "acknowledged_by", "acknowledged_at")


@admin.register(OutboxItem)
class OutboxItemAdmin(ReadOnlyAdmin):
    list_display = ("idempotency_key", "action", "attempts", "next_attempt_at", "done_at", "outcome", "last_error")
    list_filter = ("action", "outcome")


@admin.register(DriftFinding)
class DriftFindingAdmin(ReadOnlyAdmin):
    list_display = ("principal", "role", "detected_at", "last_seen_at", "resolved_at", "removed_by_accessgov")


@admin.register(AccessEvent)
class AccessEventAdmin(ReadOnlyAdmin):
    list_display = ("occurred_at", "event_type", "actor_label", "client_address", "access_request", "grant")
    list_filter = ("event_type",)
    search_fields = ("actor_label", "reason")
    date_hierarchy = "occurred_at"


class EventWebhookSubscriptionForm(forms.ModelForm):
    """Event types as a comma-separated list of patterns; an https URL that is not internal; the
    secret is write-only (never rendered, and left unchanged when the field is empty)."""

    event_types = forms.CharField(
        help_text='Comma-separated: "*", a family such as "request.*" or "grant.*", or an exact type such as '
        '"grant.expired". Families: request, decision, grant, break_glass, review, eligibility, provisioning, drift.'
    )
    url = forms.URLField(
        max_length=500, assume_scheme="https", label="URL", help_text="https:// address of your receiver."
    )
    secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Signing secret (whsec_<base64>, as in Standard Webhooks, or any long random string). "
        "Never shown back; leave empty to keep the current one.",
    )

    class Meta:
        model = EventWebhookSubscription
        fields = ["name", "system", "url", "event_types", "secret", "is_active"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["event_types"] = ", ".join(self.instance.event_types)

    def clean_event_types(self):
        patterns = [part.strip() for part in self.cleaned_data["event_types"].split(",") if part.strip()]
        problems = webhook_services.event_type_pattern_problems(patterns)
        if problems:
            raise ValidationError(problems)
        return patterns

    def clean_url(self):
        url = self.cleaned_data["url"]
        problems = webhook_services.url_problems(url)
        if problems:
            raise ValidationError(problems)
        return url

    def clean_secret(self):
        secret = self.cleaned_data.get("secret") or (self.instance.secret if self.instance.pk else "")
        if not secret:
            raise ValidationError("A signing secret is required.")
        return secret


@admin.register(EventWebhookSubscription)
class EventWebhookSubscriptionAdmin(FourEyesAdminMixin, admin.ModelAdmin):
    """Where events are streamed to: a new subscription, and an edit that sends more or elsewhere (a new URL
    or secret, more event types, another or every system, enabling it), wait for a second admin; an edit that
    only sends less (disabling, fewer types, one system) and deleting are applied at once — each recorded as
    a change (services.changes). The URL is checked against internal addresses again when applied."""

    four_eyes_kind = ChangeRequest.Kind.EVENT_WEBHOOK
    four_eyes_fields = {"url", "event_types", "system", "secret", "is_active"}  # the name is saved directly
    form = EventWebhookSubscriptionForm
    formfield_overrides = TYPED_INPUT_OVERRIDES
    list_display = ("name", "scope", "types", "url", "is_active")
    list_filter = ("is_active", "system")
    search_fields = ("name", "url")

    def delete_model(self, request, obj):
        change_services.change_delete_event_webhook(
            request.user, obj.pk, client_address=getattr(request, "client_address", None)
        )

    def delete_queryset(self, request, queryset):
        address = getattr(request, "client_address", None)
        act_on_each(
            self,
            request,
            list(queryset),
            lambda subscription: change_services.change_delete_event_webhook(
                request.user, subscription.pk, client_address=address
            ),
        )

    @admin.display(description="System")
    def scope(self, obj):
        return obj.system or "All systems"

    @admin.display(description="Event types")
    def types(self, obj):
        return ", ".join(obj.event_types)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    """The delivery log: what was sent where, how often, and the last answer; redelivery calls the service."""

    list_display = (
        "pk",
        "event_type",
        "subscription",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_at",
        "delivered_at",
    )
    list_filter = ("status", "subscription")
    list_select_related = ("event", "subscription")
    readonly_fields = ("payload",)
    actions = ["redeliver"]

    def has_change_permission(self, request, obj=None):
        # Needed for the action to be offered; the change form itself stays read-only.
        return obj is None and permissions.can_redeliver_webhook(request.user)

    @admin.display(description="Event")
    def event_type(self, obj):
        return f"{obj.event.event_type} #{obj.event_id}"

    @admin.display(description="Body sent (signed anew at each attempt)")
    def payload(self, obj):
        return webhook_services.webhook_body(obj.event).decode()

    @admin.action(description="Redeliver selected deliveries now (through the webhook service)")
    def redeliver(self, request, queryset):
        done = 0
        for delivery in queryset:
            try:
                webhook_services.webhook_delivery_redeliver(
                    request.user, delivery.pk, client_address=getattr(request, "client_address", None)
                )
                done += 1
            except AccessGovError as error:
                self.message_user(request, f"Delivery #{delivery.pk}: {error}", level="error")
        if done:
            self.message_user(request, f"Queued {done} {'delivery' if done == 1 else 'deliveries'} again.")


class ApiTokenAddForm(forms.ModelForm):
    """A new service token: for which service account, what for, until when, which actions and
    (optionally) which roles. Personal tokens are made by people themselves, in the portal."""

    scopes = forms.MultipleChoiceField(choices=[], widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = ApiToken
        fields = ["user", "name", "expires_at", "scopes", "roles"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["scopes"].choices = ApiToken.Scope.choices
        self.fields["user"].queryset = User.objects.filter(is_service_account=True, is_active=True)
        self.fields["user"].label = "Service account"
        self.fields["expires_at"].initial = clock.now() + timedelta(days=90)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Service-account tokens are proposed here (four-eyes): the secret is shown to the proposer once, on
    the page after saving, and works once another admin approves the change. Tokens are never edited,
    only revoked (the action), and the secret's hash is never shown."""

    list_display = ("name", "user", "kind", "display_prefix", "expires_at", "last_used_at", "revoked_at")
    list_filter = ("kind",)
    search_fields = ("name", "user__username", "display_prefix")
    actions = ["revoke_selected"]
    readonly_fields = (
        "user",
        "kind",
        "name",
        "display_prefix",
        "scopes",
        "roles",
        "expires_at",
        "created_at",
        "created_by",
        "last_used_at",
        "last_used_address",
        "revoked_at",
        "revoked_by",
    )

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiTokenAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else ()

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        if change:
            return
        data = form.cleaned_data
        try:
            proposal, secret = change_services.change_propose_service_token(
                request.user,
                user=data["user"],
                name=data["name"],
                expires_at=data["expires_at"],
                scopes=data["scopes"],
                roles=list(data["roles"]),
                client_address=getattr(request, "client_address", None),
            )
        except AccessGovError as error:
            raise ValidationError(str(error)) from error
        obj._proposal, obj._secret = proposal, secret

    def save_related(self, request, form, formsets, change):
        """Roles are part of the proposal."""

    def log_addition(self, request, obj, message):
        return None  # the proposal is recorded in the ledger; the token does not exist yet

    def add_view(self, request, form_url="", extra_context=None):
        try:
            return super().add_view(request, form_url, extra_context)
        except ValidationError as error:
            self.message_user(request, "; ".join(error.messages), level="error")
            return redirect(request.get_full_path())

    def response_add(self, request, obj, post_url_continue=None):
        proposal = obj._proposal
        context = {
            **self.admin_site.each_context(request),
            "proposal": proposal,
            "payload": proposal.payload,
            "secret": obj._secret,
            "opts": self.opts,
        }
        response = TemplateResponse(request, "admin/accessgov/apitoken/created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke selected tokens now")
    def revoke_selected(self, request, queryset):
        done = 0
        address = getattr(request, "client_address", None)
        for token in queryset.filter(revoked_at__isnull=True):
            token_services.api_token_revoke(request.user, token.pk, client_address=address)
            done += 1
        self.message_user(request, f"{done} token(s) revoked.")


# --- Integrations (docs/INTEGRATIONS.md): provider settings are four-eyed, their secrets write-only ----


def _https_by_default(field, **kwargs):
    """URLs typed without a scheme are https:// (Django 6's default, chosen now)."""
    from django.db import models

    if isinstance(field, models.URLField):
        kwargs["assume_scheme"] = "https"
    return field.formfield(**kwargs)


def _integration_form(model_class, secret_fields: tuple[str, ...], url_fields: tuple[str, ...]):
    """A ModelForm whose secrets are write-only (never rendered; empty keeps the current one) and whose
    provider URLs pass the internal-address guard."""

    attrs = {
        name: forms.CharField(
            required=False,
            widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
            help_text=f"{model_class._meta.get_field(name).help_text} Leave empty to keep the current one.",
        )
        for name in secret_fields
    }

    class Meta:
        model = model_class
        fields = [
            f.name for f in model_class._meta.concrete_fields if f.editable and f.name not in ("id", "created_at")
        ]
        formfield_callback = _https_by_default

    def clean(self):
        data = forms.ModelForm.clean(self)
        for name in secret_fields:
            if not data.get(name) and self.instance.pk:
                data[name] = getattr(self.instance, name)
        for name in url_fields:
            if data.get(name):
                for problem in url_problems(data[name]):
                    self.add_error(name, problem)
        return data

    return type(f"{model_class.__name__}Form", (forms.ModelForm,), {**attrs, "Meta": Meta, "clean": clean})


class IntegrationAdmin(FourEyesAdminMixin, admin.ModelAdmin):
    """Provider settings: four-eyed; URLs typed without a scheme are https://."""

    formfield_overrides = {**TYPED_INPUT_OVERRIDES, URLField: {"widget": AdminURLFieldWidget, "assume_scheme": "https"}}


@admin.register(OnCallProvider)
class OnCallProviderAdmin(IntegrationAdmin):
    four_eyes_kind = ChangeRequest.Kind.ONCALL_PROVIDER
    form = _integration_form(OnCallProvider, ("api_key",), ("base_url",))
    list_display = ("name", "kind", "base_url", "is_active")


@admin.register(TicketProvider)
class TicketProviderAdmin(IntegrationAdmin):
    four_eyes_kind = ChangeRequest.Kind.TICKET_PROVIDER
    form = _integration_form(TicketProvider, ("api_token", "webhook_secret"), ("base_url",))
    list_display = ("name", "kind", "base_url", "is_active")


@admin.register(SlackWorkspace)
class SlackWorkspaceAdmin(IntegrationAdmin):
    four_eyes_kind = ChangeRequest.Kind.SLACK_WORKSPACE
    form = _integration_form(SlackWorkspace, ("bot_token", "signing_secret"), ("api_base_url",))
    list_display = ("name", "team_id", "channel", "is_active")


class OidcTrustPolicyForm(forms.ModelForm):
    class Meta:
        model = OidcTrustPolicy
        fields = [
            "name",
            "issuer",
            "audience",
            "required_claims",
            "service_account",
            "role_ids",
            "scopes",
            "token_lifetime",
            "is_active",
        ]
        formfield_callback = _https_by_default

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["service_account"].queryset = User.objects.filter(is_service_account=True, is_active=True)

    def clean_issuer(self):

        issuer = self.cleaned_data["issuer"]
        for problem in url_problems(issuer):
            raise ValidationError(problem)
        return issuer


@admin.register(OidcTrustPolicy)
class OidcTrustPolicyAdmin(IntegrationAdmin):
    """Which CI identities become which service account, for which roles: four-eyed like other policy."""

    four_eyes_kind = ChangeRequest.Kind.OIDC_TRUST_POLICY
    form = OidcTrustPolicyForm
    list_display = ("name", "issuer", "audience", "service_account", "token_lifetime", "is_active")


@admin.register(SlackUserLink)
class SlackUserLinkAdmin(ReadOnlyAdmin):
    """Who acts as whom in Slack (made and removed by the person, recorded as slack.linked/unlinked; a
    deactivated account's link acts as nobody)."""

    list_display = ("user", "workspace", "slack_user_id", "linked_at")


# Identity providers (issue 20): their admin lives beside their models.
from accessgov.identity import admin as identity_admin  # noqa: E402, F401 (registers the admin classes)
