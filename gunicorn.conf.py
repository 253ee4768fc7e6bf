"""Read by gunicorn when it starts in this directory (the image's /app, `make`-less installs).

gunicorn itself trusts X-Forwarded-Proto (and -Ssl, -Protocol) from 127.0.0.1 by default and then tells
Django the request was HTTPS: a client on the same host could skip the redirect to HTTPS. AccessGov reads
proxy headers itself, and only with TRUSTED_PROXY_COUNT set (SECURE_PROXY_SSL_HEADER, the audit IP:
docs/SECURITY.md), so gunicorn trusts none.
"""

forwarded_allow_ips = ""
