from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.signals import user_logged_in
from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, mixins, permissions, serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
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
    """Exchange a username and password for a new API token that expires (REPROLAB_LOGIN_TOKEN_DAYS).

    Failed attempts count towards the login lockout (apps/accounts/lockout.py), shared with the
    login form: past the limit the answer is 429 with Retry-After, whatever the password.
    """

    authentication_classes: list[type] = []
    permission_classes = [permissions.AllowAny]

    def get_authenticate_header(self, request: Request) -> str:
        # Without authentication classes DRF answers a failed login 403; a wrong password is 401.
        return BearerTokenAuthentication.keyword

    @extend_schema(
        request=PasswordLoginSerializer,
        responses={
            201: IssuedTokenSerializer,
            429: OpenApiResponse(
                inline_serializer("LoginLockout", {"detail": serializers.CharField()}),
                description="Locked out after too many failed attempts (any password): wait Retry-After seconds.",
            ),
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        serializer = PasswordLoginSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # The Django request, not DRF's: axes records the attempt on it and its middleware reads
        # the lockout flag from it to answer 429.
        user = authenticate(
            request._request,
            username=serializer.validated_data["username"],
            password=serializer.validated_data["password"],
        )
        if user is None:
            raise exceptions.AuthenticationFailed("Wrong username or password.")
        # A password login like the form's (last_login, the lockout reset), without a session.
        user_logged_in.send(sender=type(user), request=request._request, user=user)
        expires_at = timezone.now() + timedelta(days=settings.REPROLAB_LOGIN_TOKEN_DAYS)
        issued = api_token_create(user=user, name=serializer.validated_data["name"], expires_at=expires_at)
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
