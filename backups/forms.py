"""Forms of the backups app: parsing only (the services judge)."""

from django import forms

from teams.permissions import teams_for_operator

from .models import BackupSchedule


class ScheduleForm(forms.ModelForm):
    class Meta:
        model = BackupSchedule
        fields = ["enabled", "at", "keep_last", "keep_days"]
        labels = {"at": "Daily at (HH:MM)", "keep_last": "Keep the newest", "keep_days": "Keep for days"}
        widgets = {"at": forms.TimeInput(format="%H:%M", attrs={"type": "time"})}


class RestoreForm(forms.Form):
    """Into the sandbox itself (type its name) or into a new sandbox (its name and team)."""

    INTO = [("self", "Into this sandbox (what it holds now is backed up first)"), ("new", "Into a new sandbox")]
    into = forms.ChoiceField(choices=INTO, widget=forms.RadioSelect, initial="new")
    confirm_name = forms.CharField(required=False, label="To restore into the sandbox itself, type its name")
    new_name = forms.CharField(required=False, max_length=200, label="New sandbox name")
    team: forms.ModelChoiceField = forms.ModelChoiceField(queryset=None, required=False, empty_label=None)  # type: ignore[arg-type]
    drop_outside_links = forms.BooleanField(required=False, label="Leave out links that point outside their folder")

    def __init__(self, *args, user, backup, **kwargs):
        super().__init__(*args, **kwargs)
        self.backup = backup
        self.fields["team"].queryset = teams_for_operator(user=user)  # type: ignore[attr-defined]
        if backup.sandbox_id is None or backup.sandbox.status == "destroyed":
            self.fields["into"].choices = [self.INTO[1]]  # type: ignore[attr-defined]

    def clean(self):
        data = super().clean() or {}
        if data.get("into") == "self":
            sandbox = self.backup.sandbox
            if sandbox is None or (data.get("confirm_name") or "").strip() != sandbox.name:
                self.add_error("confirm_name", f"Type {self.backup.sandbox_name} exactly to replace its files with this backup's.")
        elif data.get("into") == "new":
            if not (data.get("new_name") or "").strip():
                self.add_error("new_name", "Name the new sandbox.")
            if data.get("team") is None:
                self.add_error("team", "Choose a team in which you may create sandboxes.")
        return data


class ImportForm(forms.Form):
    archive = forms.FileField(label="Backup archive (.tar.gz made by a panel)")
    team: forms.ModelChoiceField = forms.ModelChoiceField(queryset=None, empty_label=None)  # type: ignore[arg-type]

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams_for_operator(user=user)  # type: ignore[attr-defined]
