"""Every installation has a Default team, so there is always somewhere to create a sandbox."""

from django.db import migrations


def create_default_team(apps, schema_editor):
    Team = apps.get_model("teams", "Team")
    Team.objects.get_or_create(slug="default", defaults={"name": "Default"})


class Migration(migrations.Migration):
    dependencies = [("teams", "0001_initial")]
    operations = [migrations.RunPython(create_default_team, migrations.RunPython.noop)]
