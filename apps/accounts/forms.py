from django import forms
from django.contrib.auth.forms import UserCreationForm

from .models import PERSONAL_TOKEN_DEFAULT_DAYS, PERSONAL_TOKEN_LIFETIMES, User


class SignupForm(UserCreationForm[User]):
    """Django's form; User.clean() adds the look-alike check (apps/accounts/confusables.py)."""

    class Meta(UserCreationForm.Meta):  # type: ignore[name-defined]
        model = User
        fields = ("username", "email")


class TokenCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the token is for, e.g. “lab laptop”.")
    lifetime_days = forms.TypedChoiceField(
        label="Expires after",
        choices=PERSONAL_TOKEN_LIFETIMES,
        coerce=int,
        initial=PERSONAL_TOKEN_DEFAULT_DAYS,
        required=False,
        empty_value=None,  # a scripted post without it gets the default
        help_text="Tokens always expire; make a new one when it does.",
    )
