import re

from django import forms
from django.contrib.auth.forms import AuthenticationForm


class SignInForm(AuthenticationForm):
    """Username + password (the first of the two sign-in steps)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["username"].widget.attrs.update({"autocomplete": "username", "autofocus": True})
        self.fields["password"].widget.attrs.update({"autocomplete": "current-password"})


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
        if re.fullmatch(r"\d{6}", token):
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
        return self.cleaned_data["otp_token"].isdigit()
