"""The team policy's form, shared by the admin and the team's page: each number's range comes
from the model, the rules between fields from teams.policy."""

from django import forms

from . import policy
from .models import TeamPolicy


class TeamPolicyForm(forms.ModelForm):
    class Meta:
        model = TeamPolicy
        fields = ["team", *policy.FIELDS]
        labels = {
            "max_sandboxes": "Most sandboxes",
            "max_memory_mb": "Total memory (MB)",
            "max_cpus": "Total CPUs",
            "max_disk_mb": "Total disk (MB)",
            "default_disk_mb": "Default disk quota (MB)",
            "idle_minutes": "Idle rule: minutes",
            "idle_cpu_percent": "Idle rule: CPU under (% of one CPU)",
        }
        help_texts = {
            "max_sandboxes": "Empty: no limit. Every sandbox that is not destroyed counts, stopped ones too.",
            "default_disk_mb": "The quota of a sandbox created without one; needed when the total disk is limited.",
            "idle_minutes": "Stop a running sandbox with no terminal open whose CPU stayed under the threshold this long. "
            "Empty (with the threshold): off.",
        }

    def __init__(self, *args, with_team: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if not with_team:
            del self.fields["team"]
        for name in policy.FIELDS:
            self.fields[name].widget.attrs.setdefault("min", 0)

    def clean(self):
        cleaned = super().clean() or {}
        if not self.errors:  # a field already refused would read as missing here
            for name, messages in policy.problems({f: cleaned.get(f) for f in policy.FIELDS}).items():
                self.add_error(name, messages)
        return cleaned
