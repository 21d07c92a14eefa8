"""Is what the panel depends on answering? Checked in the background, read by every page.

A thread in each web process asks Docker and Redis every HEALTH_SECONDS, with short timeouts,
and keeps the answer; pages only read it (`snapshot()`), so a hung Docker engine or Redis never
stalls a page that does not itself need them.
"""

import logging
import threading
import time

from django.db import close_old_connections

from controlpanel.celery import app as celery_app

from . import engine

log = logging.getLogger(__name__)
HEALTH_SECONDS = 5.0
CHECK_TIMEOUT = 3
_state: dict[str, str | None] = {"engine_error": None, "queue_error": None}
_lock = threading.Lock()
_thread: threading.Thread | None = None


def engine_problem() -> str | None:
    host = engine.default_host()
    try:
        engine.engine_for_host(host.with_timeout(CHECK_TIMEOUT)).ping()
    except engine.EngineError as exc:
        return str(exc)
    return None


def queue_problem() -> str | None:
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=1)
    except Exception as exc:  # noqa: BLE001 - any failure means actions cannot be queued
        return f"The task queue (Redis) is not reachable: {exc}"
    return None


def refresh() -> dict[str, str | None]:
    """Check both now (the background thread does this every few seconds)."""
    found = {"engine_error": engine_problem(), "queue_error": queue_problem()}
    with _lock:
        _state.update(found)
    return found


def _loop() -> None:
    while True:
        try:
            close_old_connections()  # the engine is read from the "local" host row: a fresh connection if it broke
            refresh()
        except Exception:  # the checker must outlive any one failure
            log.warning("health check failed", exc_info=True)
        time.sleep(HEALTH_SECONDS)


def snapshot() -> dict[str, str | None]:
    """The latest answer; never blocks. Starts this process's checker on first use."""
    global _thread
    if _thread is None or not _thread.is_alive():
        with _lock:
            if _thread is None or not _thread.is_alive():
                _thread = threading.Thread(target=_loop, name="health", daemon=True)
                _thread.start()
    with _lock:
        return dict(_state)


def docker_is_down() -> bool:
    return bool(snapshot()["engine_error"])
