from django.urls import path

from .consumers import SandboxesConsumer

websocket_urlpatterns = [
    path("ws/sandboxes/", SandboxesConsumer.as_asgi()),
    path("ws/sandboxes/<int:pk>/", SandboxesConsumer.as_asgi()),
]
