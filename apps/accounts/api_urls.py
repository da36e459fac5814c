from django.urls import path
from rest_framework.routers import SimpleRouter

from .api import ApiTokenViewSet, TokenObtainApi

router = SimpleRouter()
router.register("tokens", ApiTokenViewSet, basename="api-token")

urlpatterns = [
    path("auth/token/", TokenObtainApi.as_view(), name="api-token-obtain"),
    *router.urls,
]
