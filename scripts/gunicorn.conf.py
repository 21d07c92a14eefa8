"""gunicorn for the panel's pages: on 127.0.0.1 only, several processes so that pages are served
concurrently; websockets are Daphne's (see Procfile).

Sync workers, two per core: measured with bench/pages.py on 2 cores (wrk on the same machine),
4 sync workers served 330-460 dashboards a second at p99 145-175 ms for 50 clients; 2 or 3
workers did as well within the noise (2 a little better at times, each process keeping a core
to itself), and 2 x 2 or 2 x 4 threads (gthread) about the same rate with a p99 up to twice as
long (threads share one interpreter lock). Two per core are kept: a large download holds a sync
worker for minutes, and a page may wait on Docker (5 s at most; pages skip the engine while the
health check says it is down).
"""

import multiprocessing
import os

bind = f"127.0.0.1:{os.environ.get('PANEL_PORT', '8000')}"
workers = int(os.environ.get("PANEL_WEB_WORKERS", min(8, 2 * multiprocessing.cpu_count())))
worker_class = os.environ.get("PANEL_WEB_CLASS", "sync")
threads = int(os.environ.get("PANEL_WEB_THREADS", "1"))
# A worker keeps its database connection from one request to the next (for ten minutes at most;
# controlpanel/settings/base.py): opening one cost each dashboard request about a millisecond.
os.environ.setdefault("PANEL_DB_CONN_MAX_AGE", "600")
# Long enough for a large download (a backup, a folder of exports, a full log) on a slow disk:
# a sync worker that streams is busy, not hung. Docker calls have their own shorter timeouts.
timeout = 600
graceful_timeout = 10
accesslog = None
errorlog = "-"
loglevel = "warning"
