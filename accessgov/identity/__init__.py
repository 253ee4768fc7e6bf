"""Identity from the company's identity provider: OIDC sign-in (``oidc``), SCIM 2.0 provisioning
(``scim``: the wire format; the writes are ``accessgov.services.identity``) and their data (``models``)."""
