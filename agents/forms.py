from django import forms

from .models import AgentEvent


class AgentFilterForm(forms.Form):
    """The agent-activity card's filters (a GET): what is invalid is said and left out."""

    kind = forms.ChoiceField(required=False, label="Kind", choices=[("", "any"), *AgentEvent.Kind.choices])
    tool = forms.CharField(required=False, max_length=100, label="Tool", widget=forms.TextInput(attrs={"size": 8, "placeholder": "Bash"}))
    q = forms.CharField(
        required=False,
        max_length=200,
        label="Search",
        widget=forms.TextInput(attrs={"type": "search", "size": 18, "placeholder": "command, path or model"}),
    )

    def problems(self) -> list[str]:
        return [f"{self.fields[name].label}: {message}" for name, messages in self.errors.items() for message in messages]
