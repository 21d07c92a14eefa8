from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("sandboxes", "0004_terminal_session_server"),
    ]

    operations = [
        # Sandboxes made before keep the writable root they were made with; new ones are read-only.
        migrations.AddField(model_name="sandbox", name="read_only_rootfs", field=models.BooleanField(default=False)),
        migrations.AlterField(model_name="sandbox", name="read_only_rootfs", field=models.BooleanField(default=True)),
    ]
