# The production image: gunicorn serves the portal; the same image runs the Celery worker and beat.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 VAR_DIR=/var/lib/accessgov STATIC_ROOT=/app/staticfiles
WORKDIR /app
# The beat schedule and the evidence packs' volume are written by the app user (a named volume takes the
# owner of the directory it is mounted on).
RUN useradd --system --home /app accessgov \
    && mkdir -p /var/lib/accessgov /var/lib/accessgov-evidence \
    && chown accessgov /var/lib/accessgov /var/lib/accessgov-evidence
COPY pyproject.toml README.md ./
COPY portal ./portal
COPY accessgov ./accessgov
COPY accessgov_cli ./accessgov_cli
RUN pip install --no-cache-dir .
COPY . .
RUN DEBUG=0 SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput
USER accessgov
EXPOSE 8000
CMD ["gunicorn", "portal.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]
