"""Tokens and calls for the API tests."""

from api import services
from teams.models import Membership


def member(django_user_model, name: str, team, role: str):
    user = django_user_model.objects.create_user(name, password="pw-123456789")
    Membership.objects.create(user=user, team=team, role=role)
    return user


def token_for(user, scope: str = "admin", days: int = 30) -> str:
    return services.api_token_create(actor=user, name=f"{user.get_username()}-{scope}", scope=scope, expires_in_days=days).secret


def auth(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def post_json(client, url: str, token: str, body=None, **extra):
    return client.post(url, body if body is not None else {}, content_type="application/json", **auth(token), **extra)
