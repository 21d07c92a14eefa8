from django.urls import path

from .live.consumers import StatusConsumer

websocket_urlpatterns = [
    path("ws/sandboxes/", StatusConsumer.as_asgi()),
    path("ws/sandboxes/<int:pk>/", StatusConsumer.as_asgi()),
]
