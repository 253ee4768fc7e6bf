import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
application = get_wsgi_application()

# Every view module loaded now (Django loads the URL configuration on the first request otherwise),
# then everything loaded so far moved out of the garbage collector's reach: a full collection walked
# those ~180,000 long-lived objects in ~100 ms, the p99 of whichever page triggered it (issue 22).
get_resolver().url_patterns  # noqa: B018 - the import is the point
gc.collect()
gc.freeze()
