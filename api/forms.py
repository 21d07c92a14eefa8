"""The API tokens page's form: it parses; api.services decides."""

from django import forms
from django.conf import settings

from .models import ApiToken


class TokenCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="To tell your tokens apart, e.g. ci-deploy.")
    scope = forms.ChoiceField(choices=ApiToken.Scope.choices, initial=ApiToken.Scope.READ)
    expires_in_days = forms.IntegerField(
        label="Expires in (days)", initial=90, min_value=1, max_value=settings.API_TOKEN_MAX_DAYS, help_text="At most a year."
    )
