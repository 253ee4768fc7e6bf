"""The REST API (/api/v1/): bearer-token authentication, the same services and permission checks as
the pages, one error format, keyset pagination and per-token throttling."""
