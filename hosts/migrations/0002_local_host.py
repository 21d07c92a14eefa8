"""The first host, "local": this machine's engine as the settings name it (a blank URL follows
DOCKER_HOST, as before hosts existed), with this machine's CPUs, memory and disk as its
capacity. Existing panels keep working unchanged."""

from django.db import migrations


def make_local(apps, schema_editor):
    from hosts import machine

    Host = apps.get_model("hosts", "Host")
    if not Host.objects.filter(name="local").exists():
        Host.objects.create(
            name="local", docker_url="", cpus=machine.cpus(), memory_mb=machine.memory_mb(), disk_mb=machine.disk_mb(), labels=[]
        )


def remove_local(apps, schema_editor):
    apps.get_model("hosts", "Host").objects.filter(name="local").delete()


class Migration(migrations.Migration):
    dependencies = [("hosts", "0001_initial")]

    operations = [migrations.RunPython(make_local, remove_local)]
