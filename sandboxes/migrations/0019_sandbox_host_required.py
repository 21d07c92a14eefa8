import django.db.models.deletion
from django.db import migrations, models

import hosts.models


class Migration(migrations.Migration):
    dependencies = [("sandboxes", "0018_sandbox_host_local")]

    operations = [
        migrations.AlterField(
            model_name="sandbox",
            name="host",
            field=models.ForeignKey(
                default=hosts.models.local_host_pk,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="sandboxes",
                to="hosts.host",
            ),
        ),
    ]
