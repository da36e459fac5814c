"""Agent credentials. A node token (rln_…) identifies a node; a run token (rlr_…), issued with a
lease, is good only for that run's endpoints and only while the lease is live."""

from typing import Any

from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from . import services


def bearer_value(request: Any) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class NodeTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        raw = bearer_value(request)
        if raw is None:
            return None
        node = services.node_authenticate(raw=raw)
        if node is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked node token.")
        return AnonymousUser(), node

    def authenticate_header(self, request: Request) -> str:
        return "Bearer"


class RunTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        raw = bearer_value(request)
        if raw is None:
            return None
        run = services.run_authenticate(raw=raw)
        if run is None:
            raise exceptions.AuthenticationFailed("Invalid run token, or the run's lease has ended.")
        return AnonymousUser(), run

    def authenticate_header(self, request: Request) -> str:
        return "Bearer"


class NodeTokenScheme(OpenApiAuthenticationExtension):
    target_class = "apps.compute.authentication.NodeTokenAuthentication"
    name = "nodeToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "A node token (rln_…)."}


class RunTokenScheme(OpenApiAuthenticationExtension):
    target_class = "apps.compute.authentication.RunTokenAuthentication"
    name = "runToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "A run token (rlr_…) from a claim."}
