"""Sandbox.host, in three steps (0017-0019): added empty, filled with "local", then required.
Apart so that on PostgreSQL the rows' update and the ALTER TABLE are not in one transaction
(deferred foreign-key checks would refuse the ALTER)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("hosts", "0002_local_host"),
        ("sandboxes", "0016_denial_sandbox_newest"),
    ]

    operations = [
        migrations.AddField(
            model_name="sandbox",
            name="host",
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.PROTECT, related_name="sandboxes", to="hosts.host"),
        ),
    ]
