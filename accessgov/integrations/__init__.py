"""Automation where teams already work: on-call providers (PagerDuty), ticket providers (Jira), Slack
decisions and keyless CI sign-in (OIDC). One module per provider reaches it over HTTP; the write side
lives in ``accessgov.services.integrations``. See docs/INTEGRATIONS.md."""
