"""`/api/v1/projects/{slug}/environment/`: a project's default environment."""

from __future__ import annotations

from typing import Any

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.api import validated
from apps.core.schema import errors
from apps.core.uploads import reject_oversized_body, reject_oversized_file
from apps.projects.permissions import CAN_EDIT_PROJECT, get_project_for, require_role

from . import services
from .declarations import MAX_DECLARATION_BYTES
from .serializers import DeclarationSerializer, EnvironmentSerializer


class ProjectEnvironmentView(GenericAPIView):
    """GET: the project's default environment (404 when it declares none). PUT a multipart
    `file` (requirements.txt, pyproject.toml or uv.lock, and optional `layered`) to declare it:
    the site resolves it to a lock with uv and answers with the lock. DELETE: runs use the
    node's base environment again."""

    serializer_class = EnvironmentSerializer
    parser_classes = [MultiPartParser, FormParser]

    def get(self, request: Request, slug: str) -> Response:
        project = get_project_for(request.user, slug)
        if project.environment is None:
            raise Http404("This project declares no environment: its runs use the node's base environment.")
        return Response(self.get_serializer(project.environment).data)

    @extend_schema(
        request={"multipart/form-data": DeclarationSerializer},
        responses={200: EnvironmentSerializer, **errors(413, 503)},
    )
    def put(self, request: Request, slug: str) -> Response:
        project = get_project_for(request.user, slug)
        require_role(project, CAN_EDIT_PROJECT, "declare its environment")
        reject_oversized_body(request, MAX_DECLARATION_BYTES)
        data: dict[str, Any] = validated(DeclarationSerializer, request.data)
        upload = data["file"]
        reject_oversized_file(upload.name, upload.size, MAX_DECLARATION_BYTES)
        declaration = services.declare(upload.name, upload.read(), layered=data["layered"])
        services.set_project_environment(project=project, declaration=declaration)
        return Response(self.get_serializer(declaration).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, slug: str) -> Response:
        project = get_project_for(request.user, slug)
        require_role(project, CAN_EDIT_PROJECT, "change its environment")
        services.set_project_environment(project=project, declaration=None)
        return Response(status=status.HTTP_204_NO_CONTENT)
