from django.apps import AppConfig


class StorageConfig(AppConfig):
    name = "storage"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from sandboxes.models import Sandbox
        from sandboxes.services.claims import register_resumer

        from . import services

        register_resumer(Sandbox.Job.CHECKPOINT, services.resume)
        register_resumer(Sandbox.Job.ROLLBACK, services.resume)
        register_resumer(Sandbox.Job.MIGRATE, services.resume)  # a `pool migrate` that was killed
