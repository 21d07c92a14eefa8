from django.apps import AppConfig


class IncidentsConfig(AppConfig):
    name = "incidents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from sandboxes.models import Sandbox
        from sandboxes.services.claims import register_resumer
        from sandboxes.services.reconcile import register_hold_keeper

        from . import services

        register_resumer(Sandbox.Job.INCIDENT, services.resume_incident)
        register_hold_keeper(services.incident_keep_hold)
