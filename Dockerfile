# The production image: gunicorn serves the portal; the same image runs the Celery worker and beat.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 VAR_DIR=/var/lib/accessgov STATIC_ROOT=/app/staticfiles
WORKDIR /app
RUN useradd --system --home /app accessgov && mkdir -p /var/lib/accessgov && chown accessgov /var/lib/accessgov
COPY pyproject.toml README.md ./
COPY portal ./portal
COPY accessgov ./accessgov
RUN pip install --no-cache-dir .
COPY . .
RUN DEBUG=0 SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput
USER accessgov
EXPOSE 8000
CMD ["gunicorn", "portal.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]
