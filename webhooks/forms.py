from django import forms

from . import events


class WebhookForm(forms.Form):
    """A new webhook. Its rules (the URL's scheme, credentials and address) are the service's;
    the form only reads the fields."""

    url = forms.CharField(label="URL", max_length=500, widget=forms.URLInput(attrs={"placeholder": "https://ci.example.com/hooks/panel"}))
    events = forms.MultipleChoiceField(label="Events", choices=events.EVENTS, widget=forms.CheckboxSelectMultiple)
    allow_private = forms.BooleanField(
        label="Allow a private address",
        required=False,
        help_text="Loopback, private ranges, the host's LAN and its own addresses are refused unless this is ticked.",
    )
