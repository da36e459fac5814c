"""Clients of the accounts tests: one with a Bearer token, one with a signed-in session."""

from django.test import Client
from rest_framework.test import APIClient

from apps.accounts.models import User


def bearer(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client
