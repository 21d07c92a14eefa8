"""Is what the panel depends on answering? Shown as a banner on every page."""

from controlpanel.celery import app as celery_app

from . import engine


def engine_problem() -> str | None:
    try:
        engine.ping()
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


def service_status() -> dict:
    return {"engine_error": engine_problem(), "queue_error": queue_problem()}
