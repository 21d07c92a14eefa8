"""Celery tasks of the teams app: thin, they call one service."""

from celery import shared_task

from sandboxes import engine

from . import idle


@shared_task
def idle_sweep_task() -> int:
    """Periodic (Celery beat): apply every team's idle rule once. Safe to run twice: a sandbox
    already being stopped is not running, and is not looked at."""
    try:
        return len(idle.idle_sweep())
    except engine.EngineUnavailable:
        return 0
