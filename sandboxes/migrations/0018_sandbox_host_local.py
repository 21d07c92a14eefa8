"""Every existing sandbox, destroyed ones included, is on "local": the one engine there was."""

from django.db import migrations


def to_local(apps, schema_editor):
    Host = apps.get_model("hosts", "Host")
    Sandbox = apps.get_model("sandboxes", "Sandbox")
    if not Sandbox.objects.filter(host__isnull=True).exists():
        return
    local = Host.objects.filter(name="local").first()
    if local is None:  # removed by hand between the two migrations: made again from this machine
        from hosts import machine

        local = Host.objects.create(name="local", cpus=machine.cpus(), memory_mb=machine.memory_mb(), disk_mb=machine.disk_mb())
    Sandbox.objects.filter(host__isnull=True).update(host=local)


class Migration(migrations.Migration):
    dependencies = [("sandboxes", "0017_sandbox_host")]

    operations = [migrations.RunPython(to_local, migrations.RunPython.noop)]
