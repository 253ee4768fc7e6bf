from django.apps import AppConfig


class AccessGovConfig(AppConfig):
    name = "accessgov"
    verbose_name = "AccessGov"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from auditlog.registry import auditlog
        from django.db.backends.signals import connection_created

        from accessgov import catalog, dbsql, models
        from accessgov.models import loading

        # Every model of the app is read from the database by ``models.loading.from_db`` (issue 22).
        for model in self.get_models():
            model.from_db = classmethod(loading.from_db)  # type: ignore[method-assign,assignment]

        catalog.connect()
        connection_created.connect(dbsql.use_compiled_timestamp_loader, dispatch_uid="accessgov-timestamp-loader")

        auditlog.register(models.User, exclude_fields=["password", "session_stamp", "last_login"])
        auditlog.register(models.System, exclude_fields=["connector_secret"])
        auditlog.register(models.EventWebhookSubscription, exclude_fields=["secret"])
        auditlog.register(models.ApiToken, exclude_fields=["key_hash", "last_used_at", "last_used_address"])
        for model in (
            models.Role,
            models.AutoApprovalRule,
            models.Eligibility,
            models.AccessRequest,
            models.Decision,
            models.Grant,
            models.BreakGlassFollowUp,
            models.OutboxItem,
            models.DriftFinding,
        ):
            auditlog.register(model, exclude_fields=_reverse_one_to_one(model))


def _reverse_one_to_one(model) -> list[str]:
    """Reverse one-to-one accessors (a request's grant, a grant's follow-up) are not the model's own
    fields, but auditlog's diff reads them: one query per save of the model, for nothing."""
    return [f.name for f in model._meta.get_fields() if f.one_to_one and f.auto_created and not f.concrete]
