"""Every installation has a Default team, so there is always somewhere to create a sandbox."""

from django.db import migrations


def create_default_team(apps, schema_editor):
    Team = apps.get_model("teams", "Team")
    # On the database being migrated, which is not always the default one (manage.py database move).
    Team.objects.using(schema_editor.connection.alias).get_or_create(slug="default", defaults={"name": "Default"})


class Migration(migrations.Migration):
    dependencies = [("teams", "0001_initial")]
    operations = [migrations.RunPython(create_default_team, migrations.RunPython.noop)]
