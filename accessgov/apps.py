from django.apps import AppConfig


class AccessGovConfig(AppConfig):
    name = "accessgov"
    verbose_name = "AccessGov"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from auditlog.registry import auditlog

        from accessgov import models

        for model in (models.User, models.System, models.Role):
            auditlog.register(model, exclude_fields=["password", "session_stamp", "last_login"])
