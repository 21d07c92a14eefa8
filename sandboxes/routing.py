from django.urls import path

from .live.consumers import StatusConsumer
from .live.logs import LogConsumer
from .live.stats import DashboardStatsConsumer, StatsConsumer
from .live.terminal import TerminalConsumer

websocket_urlpatterns = [
    path("ws/sandboxes/", StatusConsumer.as_asgi()),
    path("ws/sandboxes/<int:pk>/", StatusConsumer.as_asgi()),
    path("ws/sandboxes/<int:pk>/logs/", LogConsumer.as_asgi()),
    path("ws/sandboxes/<int:pk>/stats/", StatsConsumer.as_asgi()),
    path("ws/sandboxes/<int:pk>/terminal/", TerminalConsumer.as_asgi()),
    path("ws/stats/", DashboardStatsConsumer.as_asgi()),
]
