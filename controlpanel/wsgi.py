"""WSGI entry point: the pages, served by gunicorn with several processes and threads (see
scripts/gunicorn.conf.py). Websockets are served by Daphne from controlpanel.asgi."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlpanel.settings.base")
application = get_wsgi_application()
