"""How an API request says who it is (a personal token) and how far its token's scope lets it go."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from controlpanel.http import client_ip
from teams.permissions import Role

from .models import ApiToken
from .services import TokenRefused, api_token_authenticate

# The most of the user's roles each scope lets a request use (teams.permissions.role_cap).
SCOPE_ROLE: dict[str, str] = {ApiToken.Scope.READ: Role.VIEWER, ApiToken.Scope.OPERATE: Role.OPERATOR, ApiToken.Scope.ADMIN: Role.ADMIN}


class BearerTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <token>`. A missing header leaves the request anonymous (401 from
    the permission check); a wrong, expired or revoked token is refused with 401 and why."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Write the header as `Authorization: Bearer <token>`.")
        try:
            raw = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Malformed token: expected ccp_XXXXXXXX_… as shown when it was made.") from None
        try:
            token = api_token_authenticate(raw, source_ip=client_ip(request))
        except TokenRefused as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from exc
        return token.user, token

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="api"'


class ScopeAllows(permissions.BasePermission):
    """A read token only reads. What operate and admin tokens may change is narrowed where the
    roles are checked (teams.permissions.authorize, under role_cap), not here."""

    message = "This token's scope is read: it may only read (GET)."

    def has_permission(self, request, view) -> bool:
        token = request.auth
        if not isinstance(token, ApiToken):
            return True  # the schema's views, under a session: they only read
        reads = request.method in permissions.SAFE_METHODS or getattr(view, "reads_only", False)  # a POST that changes nothing
        return reads or token.scope != ApiToken.Scope.READ


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """The token, as the schema (and the docs page's Authorize button) describes it."""

    target_class = BearerTokenAuthentication
    name = "token"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal API token (ccp_…), made on the panel's API tokens page.",
        }
