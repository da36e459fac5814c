from typing import Any

from django.contrib.auth import authenticate
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, mixins, permissions, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from .authentication import BearerTokenAuthentication
from .models import ApiToken
from .request_user import authenticated_user
from .serializers import ApiTokenCreateSerializer, ApiTokenSerializer, IssuedTokenSerializer, PasswordLoginSerializer
from .services import IssuedToken, api_token_create, api_token_revoke


def _issued_payload(issued: IssuedToken) -> dict[str, Any]:
    data = dict(ApiTokenSerializer(issued.token).data)
    data["token"] = issued.raw
    return data


class TokenObtainApi(APIView):
    """Exchange a username and password for a new personal API token."""

    authentication_classes: list[type] = []
    permission_classes = [permissions.AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth_token"

    def get_authenticate_header(self, request: Request) -> str:
        # Without authentication classes DRF answers a failed login 403; a wrong password is 401.
        return BearerTokenAuthentication.keyword

    @extend_schema(request=PasswordLoginSerializer, responses={201: IssuedTokenSerializer}, auth=[])
    def post(self, request: Request) -> Response:
        serializer = PasswordLoginSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = authenticate(
            request._request,
            username=serializer.validated_data["username"],
            password=serializer.validated_data["password"],
        )
        if user is None:
            raise exceptions.AuthenticationFailed("Wrong username or password.")
        issued = api_token_create(user=user, name=serializer.validated_data["name"])
        return Response(_issued_payload(issued), status=status.HTTP_201_CREATED)


class ApiTokenViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    """Your personal API tokens. DELETE revokes a token; the record stays for the audit trail."""

    queryset = ApiToken.objects.none()  # the model, for the schema; get_queryset scopes it to the user
    serializer_class = ApiTokenSerializer
    permission_classes = [permissions.IsAuthenticated]
    filterset_fields: list[str] = []
    search_fields = ["name"]
    ordering_fields = ["created_at", "name"]

    def get_queryset(self) -> QuerySet[ApiToken]:
        return ApiToken.objects.filter(user=authenticated_user(self.request))

    @extend_schema(request=ApiTokenCreateSerializer, responses={201: IssuedTokenSerializer})
    def create(self, request: Request) -> Response:
        serializer = ApiTokenCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        issued = api_token_create(user=authenticated_user(request), **serializer.validated_data)
        return Response(_issued_payload(issued), status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: ApiToken) -> None:
        api_token_revoke(token=instance)
