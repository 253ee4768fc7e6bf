"""Read by gunicorn when it starts in this directory (the image's /app, `make`-less installs).

gunicorn itself trusts X-Forwarded-Proto (and -Ssl, -Protocol) from 127.0.0.1 by default and then tells
Django the request was HTTPS: a client on the same host could skip the redirect to HTTPS. AccessGov reads
proxy headers itself, and only with TRUSTED_PROXY_COUNT set (SECURE_PROXY_SSL_HEADER, the audit IP:
docs/SECURITY.md), so gunicorn trusts none.

The request size limits, stated rather than left to gunicorn's defaults (the same values): a request line
(method, path and query string) over 4094 bytes is answered 414, more than 100 header fields or one over
8190 bytes 431 (a malformed request line or header 400), by gunicorn before Django sees the request. Those
answers are gunicorn's own small page (``Content-Type: text/html``, the reason escaped, no script): gunicorn
27 offers no setting or hook for them (``gunicorn.util.write_error`` writes them), so unlike every answer of
the portal and the API they are neither plain text nor JSON. The TLS proxy in front usually refuses such
requests first, with its own page (nginx: 414/400 past ``large_client_header_buffers``, 8 KB). Every list,
filter and export link the portal makes is far below these limits; the API's next/previous links too.
"""

forwarded_allow_ips = ""

limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190
