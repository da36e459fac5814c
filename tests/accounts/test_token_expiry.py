"""Tokens expire: those minted by a password login after REPROLAB_LOGIN_TOKEN_DAYS, personal ones
after the lifetime chosen (at most a year); the tokens page lists them with their dates."""

from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from apps.accounts.models import PERSONAL_TOKEN_MAX_DAYS, ApiToken
from apps.accounts.services import api_token_create, api_token_revoke

from ..factories import PASSWORD, make_token
from .clients import bearer, logged_in

TOKEN_URL = "/api/v1/auth/token/"
TOKENS_URL = "/api/v1/tokens/"


def later(days: float):
    """The clock `days` from now (the clock is the edge of the world here)."""
    return mock.patch("django.utils.timezone.now", return_value=timezone.now() + timedelta(days=days))


def assert_close(moment, expected) -> None:
    assert abs((moment - expected).total_seconds()) < 60


# --- POST /api/v1/auth/token/ ---------------------------------------------------------------------
def test_a_password_login_token_expires_after_the_setting(api, alice, settings):
    settings.REPROLAB_LOGIN_TOKEN_DAYS = 30
    data = api.post(TOKEN_URL, {"username": "alice", "password": PASSWORD}, format="json").json()
    assert data["expires_at"] is not None
    assert_close(ApiToken.objects.get().expires_at, timezone.now() + timedelta(days=30))


def test_a_password_login_token_works_until_it_expires(api, alice, settings):
    settings.REPROLAB_LOGIN_TOKEN_DAYS = 30
    raw = api.post(TOKEN_URL, {"username": "alice", "password": PASSWORD}, format="json").json()["token"]
    with later(29):
        assert bearer(raw).get(TOKENS_URL).status_code == 200


def test_an_expired_password_login_token_authenticates_nobody(api, alice, settings):
    settings.REPROLAB_LOGIN_TOKEN_DAYS = 30
    raw = api.post(TOKEN_URL, {"username": "alice", "password": PASSWORD}, format="json").json()["token"]
    with later(31):
        response = bearer(raw).get(TOKENS_URL)
    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid, expired or revoked API token."


def test_a_password_login_records_the_login_time(api, alice):
    api.post(TOKEN_URL, {"username": "alice", "password": PASSWORD}, format="json")
    alice.refresh_from_db()
    assert alice.last_login is not None


# --- POST /api/v1/tokens/ -------------------------------------------------------------------------
def test_a_personal_token_from_the_api_expires_in_30_days_by_default(alice):
    data = bearer(make_token(alice)).post(TOKENS_URL, {"name": "ci"}, format="json").json()
    assert_close(ApiToken.objects.get(pk=data["id"]).expires_at, timezone.now() + timedelta(days=30))


def test_a_personal_token_from_the_api_takes_a_chosen_expiry(alice):
    when = timezone.now() + timedelta(days=90)
    data = bearer(make_token(alice)).post(TOKENS_URL, {"name": "ci", "expires_at": when.isoformat()}, format="json")
    assert data.status_code == 201
    assert_close(ApiToken.objects.get(pk=data.json()["id"]).expires_at, when)


@pytest.mark.parametrize(
    ("offset", "message"),
    [
        (timedelta(minutes=-1), "Must be in the future."),
        (timedelta(days=PERSONAL_TOKEN_MAX_DAYS + 1), f"Must be within {PERSONAL_TOKEN_MAX_DAYS} days."),
    ],
    ids=["past", "beyond-a-year"],
)
def test_a_personal_token_expiry_outside_the_allowed_range_is_400(alice, offset, message):
    client = bearer(make_token(alice))
    before = ApiToken.objects.count()
    when = (timezone.now() + offset).isoformat()
    response = client.post(TOKENS_URL, {"name": "ci", "expires_at": when}, format="json")
    assert response.status_code == 400
    assert response.json()["expires_at"] == [message]
    assert ApiToken.objects.count() == before


def test_a_null_expiry_is_refused_with_400(alice):
    response = bearer(make_token(alice)).post(TOKENS_URL, {"name": "ci", "expires_at": None}, format="json")
    assert response.status_code == 400
    assert "expires_at" in response.json()


# --- the tokens page ------------------------------------------------------------------------------
def test_the_tokens_page_creates_a_token_with_the_chosen_lifetime(alice):
    response = logged_in(alice).post("/accounts/tokens/", {"name": "laptop", "lifetime_days": "90"})
    assert response.status_code == 200
    token = ApiToken.objects.get(user=alice)
    assert token.expires_at is not None
    assert_close(token.expires_at, timezone.now() + timedelta(days=90))
    assert token.expires_at.strftime("%Y-%m-%d") in response.content.decode()


def test_the_tokens_page_refuses_a_lifetime_it_does_not_offer(alice):
    response = logged_in(alice).post("/accounts/tokens/", {"name": "laptop", "lifetime_days": "100000"})
    assert response.status_code == 200
    assert response.context["form"].errors["lifetime_days"]
    assert not ApiToken.objects.filter(user=alice).exists()


def test_the_tokens_page_lists_created_last_used_and_expiry(alice):
    issued = api_token_create(user=alice, name="cli", expires_at=timezone.now() + timedelta(days=7))
    bearer(issued.raw).get(TOKENS_URL)  # records last use
    issued.token.refresh_from_db()
    page = logged_in(alice).get("/accounts/tokens/").content.decode()
    active = page[page.index('id="active-tokens"') :]
    for moment in (issued.token.created_at, issued.token.last_used_at, issued.token.expires_at):
        assert moment is not None
        assert moment.strftime("%Y-%m-%d %H:%M") in active
    assert "<th>Expires</th>" in active
    assert f"/accounts/tokens/{issued.token.pk}/revoke/" in active


def test_the_tokens_page_lists_password_login_tokens(api, alice):
    api.post(TOKEN_URL, {"username": "alice", "password": PASSWORD, "name": "from-the-cli"}, format="json")
    response = logged_in(alice).get("/accounts/tokens/")
    assert [t.name for t in response.context["tokens"]] == ["from-the-cli"]


def test_the_tokens_page_shows_expired_tokens_apart_as_expired(alice):
    expired = api_token_create(user=alice, name="old", expires_at=timezone.now() - timedelta(days=1))
    revoked = api_token_create(user=alice, name="gone", expires_at=timezone.now() + timedelta(days=1))
    api_token_revoke(token=revoked.token)
    active = api_token_create(user=alice, name="current", expires_at=timezone.now() + timedelta(days=1))
    response = logged_in(alice).get("/accounts/tokens/")
    assert list(response.context["tokens"]) == [active.token]
    assert {t.name: t.status for t in response.context["past_tokens"]} == {"old": "expired", "gone": "revoked"}
    page = response.content.decode()
    past = page[page.index('id="past-tokens"') :]
    assert "expired" in past
    assert f"/accounts/tokens/{expired.token.pk}/revoke/" not in page


def test_an_expired_token_reads_expired_not_revoked(alice):
    issued = api_token_create(user=alice, name="old", expires_at=timezone.now() - timedelta(days=1))
    assert issued.token.status == "expired"
    assert not issued.token.is_active
