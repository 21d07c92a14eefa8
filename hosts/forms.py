"""The Hosts page's form: a new host. Only shapes input; hosts.services judges it."""

from django import forms


class HostForm(forms.Form):
    name = forms.CharField(max_length=63, help_text="Lower-case letters, digits and '-'.")
    docker_url = forms.CharField(
        max_length=255,
        required=False,
        label="Docker URL",
        help_text="unix:///var/run/docker.sock, tcp://… or ssh://…; blank: this machine's.",
    )
    cpus = forms.DecimalField(
        min_value=0.25, max_digits=7, decimal_places=2, required=False, label="CPUs", help_text="Blank: this machine's."
    )
    memory_mb = forms.IntegerField(min_value=0, required=False, label="Memory (MB)", help_text="Blank: this machine's.")
    disk_mb = forms.IntegerField(min_value=0, required=False, label="Disk (MB)", help_text="Blank: this machine's.")
    labels = forms.CharField(max_length=500, required=False, help_text="Separated by spaces or commas, e.g. gpu fast-disk.")


class JoinTokenForm(forms.Form):
    """A host on another machine, joined by its agent: the name it gets and its labels."""

    name = forms.CharField(max_length=63, help_text="Lower-case letters, digits and '-'.")
    labels = forms.CharField(max_length=500, required=False, help_text="Separated by spaces or commas, e.g. gpu fast-disk.")
