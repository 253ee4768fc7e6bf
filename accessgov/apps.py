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

        # Secrets and per-sign-in bookkeeping are never recorded: a hash or a key does not belong in a log.
        for model, secret_or_noise in (
            (models.User, ["password", "session_stamp", "last_login", "inbox_read_through"]),
            (models.System, ["connector_secret"]),
            (models.EventWebhookSubscription, ["secret"]),
            (models.ApiToken, ["key_hash", "last_used_at", "last_used_address"]),
        ):
            auditlog.register(model, exclude_fields=secret_or_noise + _reverse_relations(model))
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
            auditlog.register(model, exclude_fields=_reverse_relations(model))


def _reverse_relations(model) -> list[str]:
    """Reverse accessors (a request's grant, a grant's events and activity seals) are not the model's own
    fields, but auditlog's diff reads them: a query per save for the one-to-ones, and for the others a line
    such as "events: None → accessgov.AccessEvent.None" on every created row, for nothing."""
    return [f.name for f in model._meta.get_fields() if f.auto_created and not f.concrete]
