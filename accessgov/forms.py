import re
import zoneinfo
from functools import cache
from typing import cast

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.core.validators import MaxLengthValidator

from accessgov import inputs, notifications, permissions
from accessgov.inputs import parse_duration
from accessgov.models import ApiToken, ReviewCampaign, System, User
from accessgov.services.tokens import PERSONAL_DEFAULT_SCOPES, offered_token_scopes


class SignInForm(AuthenticationForm):
    """Username + password (the first of the two sign-in steps)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # AuthenticationForm sets max_length after the field is built, so it is never checked: a longer
        # name reached authenticate(), and django-axes' failure record (varchar 255) was a 500.
        self.fields["username"].validators.append(MaxLengthValidator(self.fields["username"].max_length))
        self.fields["username"].widget.attrs.update({"autocomplete": "username", "autofocus": True})
        self.fields["password"].widget.attrs.update({"autocomplete": "current-password"})

    def clean(self):
        try:
            return super().clean()
        except forms.ValidationError:
            # "Please enter a correct username and password" is about both fields: a screen reader on the
            # focused username field hears it with the field (includes/form_errors.html's id).
            for name in ("username", "password"):
                self.fields[name].widget.attrs.update({"aria-invalid": "true", "aria-describedby": "form-errors"})
            raise

    def confirm_login_allowed(self, user) -> None:
        super().confirm_login_allowed(user)

        # A machine identity never signs in, whatever was done to its password; with PASSWORD_SIGN_IN=
        # break-glass only the named break-glass accounts use a password (the rest: their IdP).
        if not permissions.can_sign_in_with_password(user):
            raise self.get_invalid_login_error()


class OTPCodeForm(forms.Form):
    """A 6-digit TOTP code, or (when allowed) an 8-character backup code."""

    otp_token = forms.CharField(
        label="Code",
        max_length=16,
        widget=forms.TextInput(
            attrs={
                "autocomplete": "one-time-code",
                "inputmode": "numeric",
                "autofocus": True,
                "spellcheck": "false",
                "autocapitalize": "off",
            }
        ),
    )

    def __init__(self, *args, allow_backup: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.allow_backup = allow_backup
        if allow_backup:
            self.fields["otp_token"].help_text = "The 6-digit code from your authenticator app, or a backup code."
        else:
            self.fields["otp_token"].help_text = "The 6-digit code from your authenticator app."

    def clean_otp_token(self) -> str:
        token = re.sub(r"[\s-]", "", self.cleaned_data["otp_token"]).lower()
        if re.fullmatch(r"[0-9]{6}", token, re.ASCII):
            return token
        if self.allow_backup and re.fullmatch(r"[a-z2-7]{8}", token):
            return token
        if self.allow_backup:
            raise forms.ValidationError(
                "Enter the 6 digits from your authenticator app, or an 8-character backup code."
            )
        raise forms.ValidationError("Enter the 6 digits from your authenticator app.")

    @property
    def is_totp(self) -> bool:
        return len(self.cleaned_data["otp_token"]) == 6  # a backup code has 8 characters, maybe all digits


# --- Lifecycle forms ------------------------------------------------------------------------------


class DurationInput(forms.CharField):
    """A duration as people write it (``inputs.parse_duration``: ASCII digits, at most 366 days)."""

    default_error_messages = {
        "invalid": "Write a duration like 30m, 1h, 1h30m or 2h.",
        "too_long": "A duration is at most 366 days.",
    }

    def widget_attrs(self, widget) -> dict:
        return {**super().widget_attrs(widget), "maxlength": str(inputs.DURATION_MAX_LENGTH)}

    def to_python(self, value):
        value = super().to_python(value)
        if value in self.empty_values:
            return None
        duration = parse_duration(value)
        if duration is None:
            readable = parse_duration(re.sub(r"[0-9]+", "1", value, flags=re.ASCII))
            code = "too_long" if readable is not None else "invalid"
            raise forms.ValidationError(self.error_messages[code], code=code)
        return duration


def format_duration_input(duration) -> str:
    minutes = int(duration.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    return (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes or not hours else "")


class _ListedChoices(forms.models.ModelChoiceIterator):
    """A model choice field's options from the rows its page read already (``field.listed``): no second
    query, and no server-side cursor (Django's iterator declares one on PostgreSQL, ≈ 2 ms a form)."""

    def __iter__(self):
        if self.field.empty_label is not None:
            yield ("", self.field.empty_label)
        for obj in self.field.listed:
            yield self.choice(obj)

    def __len__(self) -> int:
        return len(self.field.listed) + (self.field.empty_label is not None)


class ListedModelChoiceField(inputs.ModelChoiceField):
    """A ``ModelChoiceField`` showing ``listed`` (the queryset's rows, read once by the page) and validating
    against the queryset as usual."""

    iterator = _ListedChoices
    listed: list = []


class AccessRequestForm(forms.Form):
    pending_url = ""  # set when refused as a duplicate: the page links the pending request
    role = ListedModelChoiceField(queryset=None, empty_label="Choose a role…")
    duration = DurationInput(
        required=False,
        help_text="e.g. 30m, 1h, 1h30m. Empty: the role's default (shown under the role you choose).",
    )
    starts_at = inputs.DateTimeField(
        required=False,
        label="Start (optional)",
        help_text="In your time zone. Leave empty to start as soon as it is approved.",
    )
    justification = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=2000,
        help_text="What you will do and why. Approvers and auditors read this.",
    )
    ticket = forms.CharField(
        required=False, max_length=100, help_text="Incident or change ticket, e.g. OPS-123 or acme/payments#123."
    )

    def __init__(self, *args, roles=None, **kwargs) -> None:
        """``roles``: the queryset a chosen role must be in (``list_roles``: its rows, as the page shows them)."""
        super().__init__(*args, **kwargs)
        self.fields["role"].queryset = roles
        self.fields["role"].widget.attrs["data-role-policies"] = ""  # the page shows the chosen role's policy

    def clean(self):
        data = super().clean()
        # Only a duration left empty takes the default: "0m" is a duration of zero (timedelta(0) is false), which
        # the policy refuses, not an empty field (a probe's "0m" was granted the role's hour).
        if data.get("duration") is None and data.get("role") is not None and "duration" not in self.errors:
            data["duration"] = data["role"].default_duration  # what the table beside the form says
        return data

    def list_roles(self, listed: list) -> None:
        """The role options, as the page read them (``roles``' rows)."""
        cast(ListedModelChoiceField, self.fields["role"]).listed = listed
        self.fields["role"].label_from_instance = lambda role: (
            f"{role.system.name} · {role.name} ({role.get_risk_tier_display()} risk)"
        )


class ExtensionForm(forms.Form):
    duration = DurationInput(label="Extend by")
    justification = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=2000)
    ticket = forms.CharField(required=False, max_length=100)
    # The end the form showed: a second click, or another tab, after the grant was extended asks for nothing
    # more (access_request_submit_extension's ``seen_expires_at``).
    ends_at = inputs.InstantField(required=False, widget=forms.HiddenInput)

    def clean(self):
        cleaned = super().clean()
        if "ends_at" in self.errors:  # a hidden field: its error is the form's
            raise forms.ValidationError(self.errors.pop("ends_at"))
        return cleaned


class DecisionForm(forms.Form):
    comment = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), max_length=2000)
    duration = DurationInput(required=False, label="Approve for (optional, shorter)")
    otp_token = forms.CharField(
        required=False,
        max_length=6,
        label="Authenticator code",
        widget=forms.TextInput(attrs={"inputmode": "numeric", "autocomplete": "one-time-code"}),
    )


class ActivityExportFilters(forms.Form):
    """The activity export's filters: a grant, a system, and a range of days (``until`` included)."""

    grant = inputs.IdField(required=False, label="Grant")
    system = inputs.IdField(required=False, label="System")
    since = inputs.DateField(required=False, label="Since")
    until = inputs.DateField(required=False, label="Until")

    def clean(self):
        data = super().clean()
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise forms.ValidationError("Since is after until: nothing could match.")
        return data


class ReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=2000)


class BreakGlassForm(forms.Form):
    role = inputs.ModelChoiceField(queryset=None, empty_label="Choose a role…")
    duration = DurationInput(initial="1h", help_text="At most 1 hour.")
    justification = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=2000,
        help_text="The emergency, and the incident reference.",
    )
    otp_token = forms.CharField(
        max_length=6,
        required=False,  # the sign-in code counts while fresh; a code typed anyway is checked
        label="Authenticator code",
        widget=forms.TextInput(attrs={"inputmode": "numeric", "autocomplete": "one-time-code"}),
    )

    def __init__(self, *args, roles=None, step_up: dict | None = None, **kwargs) -> None:
        """``roles``: the queryset a chosen role must be in (``list_roles``: its rows, as the page shows them);
        ``step_up``: ``step_up_state`` of the request (whether a code is needed now, and the sentence why)."""
        super().__init__(*args, **kwargs)
        if step_up is not None:
            field = self.fields["otp_token"]
            field.help_text = step_up["note"]
            if not step_up["needed"]:
                field.label = "Authenticator code (not needed now)"
        self.fields["role"].queryset = roles
        self.fields["role"].label_from_instance = lambda role: f"{role.system.name} · {role.name}"


class EligibilityForm(forms.Form):
    role = inputs.ModelChoiceField(queryset=None)
    user = inputs.ModelChoiceField(queryset=None, required=False)
    group = inputs.ModelChoiceField(queryset=None, required=False)
    ends_at = inputs.DateTimeField(
        required=False,
        label="Ends (optional)",
        help_text="In your time zone.",
    )
    reason = forms.CharField(max_length=300)

    def __init__(self, *args, system=None, actor: User | None = None, **kwargs) -> None:
        """``actor``: the owner filling it in, left out of the people offered (nobody makes themselves eligible)."""
        from django.contrib.auth.models import Group

        super().__init__(*args, **kwargs)
        self.fields["role"].queryset = system.roles.all()
        people = User.objects.filter(is_active=True).order_by("username")
        self.fields["user"].queryset = people.exclude(pk=actor.pk) if actor is not None else people
        self.actor = actor
        self.fields["group"].queryset = Group.objects.order_by("name")

    def clean(self):
        data = super().clean()
        if self.actor is not None and "user" in self.errors and self.data.get("user") == str(self.actor.pk):
            self.errors["user"] = self.error_class(["Nobody makes themselves eligible: ask another owner or an admin."])
            return data
        if bool(data.get("user")) == bool(data.get("group")):
            raise forms.ValidationError("Choose either a user or a group.")
        return data


class ReviewCampaignForm(forms.Form):
    """An auditor opens an access review by hand (the quarterly one is opened by beat)."""

    name = forms.CharField(max_length=200)
    systems = forms.ModelMultipleChoiceField(queryset=None, widget=forms.CheckboxSelectMultiple)
    due_at = inputs.DateTimeField(
        label="Due",
        help_text="In your time zone.",
    )
    no_response = forms.ChoiceField(label="Items nobody answers", widget=forms.RadioSelect)
    keep_days = inputs.WholeNumberField(
        label="Kept eligibility runs for (days)", min_value=1, max_value=3650, help_text="New end date, from closing."
    )
    grace_days = inputs.WholeNumberField(
        label="Overdue period before it closes itself (days)", min_value=0, max_value=90
    )
    long_grant_days = inputs.WholeNumberField(
        label="Also review grants active longer than (days)", min_value=1, max_value=3650
    )

    def __init__(self, *args, **kwargs) -> None:
        from django.conf import settings

        super().__init__(*args, **kwargs)
        self.fields["systems"].queryset = System.objects.order_by("name")
        self.fields["no_response"].choices = ReviewCampaign.NoResponse.choices
        self.fields["no_response"].initial = ReviewCampaign.NoResponse.REVOKE
        self.fields["keep_days"].initial = settings.REVIEW_KEEP_DAYS
        self.fields["grace_days"].initial = settings.REVIEW_GRACE_DAYS
        self.fields["long_grant_days"].initial = 7


class ReviewReassignForm(forms.Form):
    reviewer = inputs.ModelChoiceField(queryset=None, empty_label=None)

    def __init__(self, *args, candidates=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["reviewer"].queryset = candidates


class ApiTokenForm(forms.Form):
    """A personal API token: a name, a lifetime, and the actions it may take."""

    LIFETIMES = [("7", "7 days"), ("30", "30 days"), ("90", "90 days"), ("365", "1 year")]

    name = forms.CharField(max_length=100, help_text="Where the token is used, e.g. “deploy job, payments repo”.")
    lifetime_days = forms.TypedChoiceField(label="Expires after", choices=LIFETIMES, coerce=int, initial="30")
    scopes = forms.MultipleChoiceField(
        widget=forms.CheckboxSelectMultiple,
        help_text="Only what the token needs. Offered: what you can do now; a token never does more than you may.",
    )

    def __init__(self, *args, user: User | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        offered = PERSONAL_DEFAULT_SCOPES if user is None else offered_token_scopes(user)
        self.fields["scopes"].choices = [choice for choice in ApiToken.Scope.choices if choice[0] in offered]
        # Nothing ticked in advance: a token gets only what the person ticks (issue 18: an auditor who
        # ticked one scope got seven, six of them pre-ticked).


class EvidencePackForm(forms.Form):
    """An auditor asks for an evidence pack: a period of whole UTC days and, optionally, some systems."""

    since = forms.DateField(label="First day (UTC)", widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(label="Last day (UTC, included)", widget=forms.DateInput(attrs={"type": "date"}))
    systems = forms.ModelMultipleChoiceField(
        queryset=None,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every system. Policy changes and deactivations are listed whatever the scope.",
    )

    def __init__(self, *args, **kwargs) -> None:

        super().__init__(*args, **kwargs)
        self.fields["systems"].queryset = System.objects.order_by("name")


class NotificationPreferencesForm(forms.Form):
    """Per notification category, email and Slack on or off (issue 18). Fields are built from
    notifications.CATEGORIES; everything is on until the person switches it off."""

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.categories = []
        for name, (label, kinds) in notifications.CATEGORIES.items():
            sample = next(iter(sorted(kinds)))
            row = {"name": name, "label": label, "fields": []}
            for channel in notifications.CHANNELS:
                key = f"{name}__{channel}"
                self.fields[key] = forms.BooleanField(
                    required=False,
                    label=f"{label}: {'email' if channel == 'email' else 'Slack'}",
                    initial=notifications.wants(user, sample, channel),
                )
                row["fields"].append(key)
            self.categories.append(row)

    @property
    def rows(self) -> list[dict]:
        return [{"label": row["label"], "fields": [self[key] for key in row["fields"]]} for row in self.categories]

    def preferences(self) -> dict[str, dict[str, bool]]:
        return {
            name: {channel: bool(self.cleaned_data.get(f"{name}__{channel}")) for channel in notifications.CHANNELS}
            for name in notifications.CATEGORIES
        }


@cache
def time_zone_names() -> frozenset[str]:
    """Every IANA zone this system's zoneinfo knows (the choices of a person's time zone)."""
    return frozenset(zoneinfo.available_timezones())


class TimeZoneForm(forms.Form):
    """A person's own time zone (issue 18): an IANA name, checked against zoneinfo. Empty: UTC. The
    portal's script fills an empty field with the browser's zone."""

    time_zone = forms.CharField(
        label="Time zone",
        max_length=64,
        required=False,
        help_text="An IANA name such as Europe/Berlin or America/New_York. Empty: UTC. Times show in this zone; "
        "hover one to see it in UTC; exports stay in UTC.",
        widget=forms.TextInput(attrs={"list": "time-zones", "autocomplete": "off", "data-browser-zone": ""}),
    )

    def clean_time_zone(self) -> str:
        value = self.cleaned_data["time_zone"].strip()
        if value and value not in time_zone_names():
            raise forms.ValidationError(
                f"“{value}” is not a time zone this system knows. Use an IANA name such as Europe/Berlin."
            )
        return value


BULK_DECISION_MAX = 50


class BulkDecisionForm(forms.Form):
    """Several queue cards decided at once (issue 18): the ticked request ids, one outcome, one comment,
    and one authenticator code for the whole batch. Each decision is still its own service call."""

    ids = forms.MultipleChoiceField(
        required=True,
        error_messages={"required": "Tick the requests to decide.", "invalid_choice": "%(value)s is not a request id."},
    )
    outcome = forms.ChoiceField(choices=[("approve", "Approve"), ("deny", "Deny")])
    comment = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), max_length=2000)
    otp_token = forms.CharField(
        required=False,
        max_length=6,
        label="Authenticator code",
        widget=forms.TextInput(attrs={"inputmode": "numeric", "autocomplete": "one-time-code"}),
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Any id-shaped value is a choice; whether the request is in the person's queue is the view's
        # question (answered per item, without saying whether another person's request exists).
        self.fields["ids"].valid_value = lambda value: inputs.parse_id(value) is not None

    def clean_ids(self) -> list[int]:
        values = self.cleaned_data["ids"]
        if len(values) > BULK_DECISION_MAX:
            raise forms.ValidationError(f"Decide at most {BULK_DECISION_MAX} requests at once.")
        return list(dict.fromkeys(int(v) for v in values))

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("outcome") == "deny" and not (cleaned.get("comment") or "").strip():
            self.add_error("comment", "Say why you deny these requests: each requester will read it.")
        return cleaned
