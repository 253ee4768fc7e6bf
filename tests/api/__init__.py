"""The token API and the identity provider endpoints (SCIM, keyless OIDC)."""
