"""Personal API tokens (issued once, stored as a sha256, revocable) and the account pages."""

import hashlib
from datetime import timedelta

import pytest
from django.contrib.auth import SESSION_KEY
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.models import ApiToken, User
from apps.accounts.services import api_token_create

from ..factories import PASSWORD, make_token
from .clients import bearer, logged_in

TOKEN_URL = "/api/v1/auth/token/"
TOKENS_URL = "/api/v1/tokens/"
STRONG_PASSWORD = "lichen-orbit-4711-quartz"


# --- POST /api/v1/auth/token/ ---------------------------------------------------------------------
def test_password_login_issues_a_prefixed_token(api, alice):
    response = api.post(TOKEN_URL, {"username": "alice", "password": PASSWORD, "name": "laptop"}, format="json")
    assert response.status_code == 201
    data = response.json()
    assert data["token"].startswith("rlp_")
    assert data["name"] == "laptop"
    assert data["display_prefix"] == data["token"][:8]
    assert ApiToken.objects.get(pk=data["id"]).user == alice


def test_password_login_stores_only_the_tokens_sha256(api, alice):
    raw = api.post(TOKEN_URL, {"username": "alice", "password": PASSWORD}, format="json").json()["token"]
    row = ApiToken.objects.filter(user=alice).values().get()
    assert row["token_hash"] == hashlib.sha256(raw.encode()).hexdigest()
    assert all(raw not in str(value) for value in row.values())


def test_issued_token_authenticates_api_calls(api, alice):
    raw = api.post(TOKEN_URL, {"username": "alice", "password": PASSWORD}, format="json").json()["token"]
    response = bearer(raw).get(TOKENS_URL)
    assert response.status_code == 200
    assert response.json()["count"] == 1


def test_password_login_rejects_a_wrong_password_with_401(api, alice):
    response = api.post(TOKEN_URL, {"username": "alice", "password": "not-it"}, format="json")
    assert response.status_code == 401
    assert response.json()["detail"] == "Wrong username or password."
    assert not ApiToken.objects.exists()


def test_password_login_rejects_an_unknown_user_like_a_wrong_password(api, db):
    response = api.post(TOKEN_URL, {"username": "nobody", "password": PASSWORD}, format="json")
    assert response.status_code == 401
    assert response.json()["detail"] == "Wrong username or password."


def test_password_login_rejects_an_inactive_user(api, alice):
    alice.is_active = False
    alice.save()
    response = api.post(TOKEN_URL, {"username": "alice", "password": PASSWORD}, format="json")
    assert response.status_code == 401
    assert not ApiToken.objects.exists()


def test_password_login_without_a_password_names_the_missing_field(api, alice):
    response = api.post(TOKEN_URL, {"username": "alice"}, format="json")
    assert response.status_code == 400
    assert "password" in response.json()


# --- Authorization: Bearer ------------------------------------------------------------------------
def test_bearer_token_authenticates_as_its_user(alice, bob):
    make_token(bob)
    api_token_create(user=alice, name="mine")
    response = bearer(make_token(alice)).get(TOKENS_URL)
    assert response.status_code == 200
    assert {t["name"] for t in response.json()["results"]} == {"mine", "test"}


def test_using_a_token_records_when_it_was_last_used(alice):
    issued = api_token_create(user=alice, name="cli")
    bearer(issued.raw).get(TOKENS_URL)
    issued.token.refresh_from_db()
    assert issued.token.last_used_at is not None


def test_revoked_token_is_refused_with_401(alice):
    issued = api_token_create(user=alice, name="cli")
    client = bearer(issued.raw)
    assert client.delete(f"{TOKENS_URL}{issued.token.pk}/").status_code == 204
    response = client.get(TOKENS_URL)
    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid, expired or revoked API token."


def test_revoking_keeps_the_record_with_its_revocation_time(alice):
    issued = api_token_create(user=alice, name="cli")
    bearer(make_token(alice)).delete(f"{TOKENS_URL}{issued.token.pk}/")
    issued.token.refresh_from_db()
    assert issued.token.revoked_at is not None


def test_expired_token_is_refused_with_401(alice):
    issued = api_token_create(user=alice, name="old", expires_at=timezone.now() - timedelta(minutes=1))
    response = bearer(issued.raw).get(TOKENS_URL)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


def test_token_before_its_expiry_is_accepted(alice):
    issued = api_token_create(user=alice, name="soon", expires_at=timezone.now() + timedelta(hours=1))
    response = bearer(issued.raw).get(TOKENS_URL)
    assert response.status_code == 200


def test_token_of_a_deactivated_user_is_refused_with_401(alice):
    raw = make_token(alice)
    alice.is_active = False
    alice.save()
    response = bearer(raw).get(TOKENS_URL)
    assert response.status_code == 401


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer rlp_one rlp_two",
        "Bearer not-a-token",
        "Bearer rlp_thisTokenWasNeverIssued",
    ],
    ids=["no-token", "two-tokens", "no-prefix", "unknown-token"],
)
def test_malformed_or_unknown_bearer_header_is_refused_with_401(alice, header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get(TOKENS_URL)
    assert response.status_code == 401
    assert response.json()["detail"]


def test_token_list_needs_authentication(api, alice):
    response = api.get(TOKENS_URL)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


# --- /api/v1/tokens/ ------------------------------------------------------------------------------
def test_token_list_shows_only_your_own_tokens(alice, bob):
    api_token_create(user=bob, name="bobs-laptop")
    api_token_create(user=alice, name="alices-laptop")
    response = bearer(make_token(alice)).get(TOKENS_URL)
    assert sorted(t["name"] for t in response.json()["results"]) == ["alices-laptop", "test"]


def test_token_list_never_shows_a_secret(alice):
    issued = api_token_create(user=alice, name="cli")
    response = bearer(make_token(alice)).get(TOKENS_URL)
    assert issued.raw not in response.content.decode()
    assert issued.token.token_hash not in response.content.decode()
    for token in response.json()["results"]:
        assert "token" not in token
        assert "token_hash" not in token


def test_token_detail_never_shows_the_secret(alice):
    issued = api_token_create(user=alice, name="cli")
    response = bearer(make_token(alice)).get(f"{TOKENS_URL}{issued.token.pk}/")
    assert response.status_code == 200
    assert response.json()["display_prefix"] == issued.raw[:8]
    assert issued.raw not in response.content.decode()


def test_creating_a_token_through_the_api_shows_it_once(alice):
    client = bearer(make_token(alice))
    created = client.post(TOKENS_URL, {"name": "ci"}, format="json")
    assert created.status_code == 201
    raw = created.json()["token"]
    assert raw.startswith("rlp_")
    assert raw not in client.get(f"{TOKENS_URL}{created.json()['id']}/").content.decode()


def test_another_users_token_is_not_found(alice, bob):
    bobs = api_token_create(user=bob, name="bobs")
    response = bearer(make_token(alice)).get(f"{TOKENS_URL}{bobs.token.pk}/")
    assert response.status_code == 404


def test_another_users_token_cannot_be_revoked(alice, bob):
    bobs = api_token_create(user=bob, name="bobs")
    response = bearer(make_token(alice)).delete(f"{TOKENS_URL}{bobs.token.pk}/")
    assert response.status_code == 404
    bobs.token.refresh_from_db()
    assert bobs.token.revoked_at is None


# --- web: signup and login ------------------------------------------------------------------------
def test_signup_creates_the_user_and_logs_them_in(client, db):
    response = client.post(
        "/accounts/signup/",
        {"username": "carol", "email": "carol@example.org", "password1": STRONG_PASSWORD, "password2": STRONG_PASSWORD},
    )
    assert response.status_code == 302
    assert response["Location"] == "/"
    carol = User.objects.get(username="carol")
    assert carol.check_password(STRONG_PASSWORD)
    assert client.session[SESSION_KEY] == str(carol.pk)


def test_signup_with_mismatched_passwords_creates_nobody(client, db):
    response = client.post(
        "/accounts/signup/",
        {"username": "carol", "email": "carol@example.org", "password1": STRONG_PASSWORD, "password2": "other"},
    )
    assert response.status_code == 200
    assert response.context["form"].errors["password2"]
    assert not User.objects.filter(username="carol").exists()
    assert SESSION_KEY not in client.session


def test_login_page_renders_a_form(client, db):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert b'name="password"' in response.content


def test_login_page_logs_the_user_in(client, alice):
    response = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.session[SESSION_KEY] == str(alice.pk)


def test_login_page_rejects_a_wrong_password(client, alice):
    response = client.post("/accounts/login/", {"username": "alice", "password": "not-it"})
    assert response.status_code == 200
    assert response.context["form"].non_field_errors()
    assert SESSION_KEY not in client.session


# --- web: the tokens page -------------------------------------------------------------------------
def test_tokens_page_sends_anonymous_visitors_to_login(client, db):
    response = client.get("/accounts/tokens/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/accounts/tokens/"


def test_tokens_page_creates_a_token_and_shows_it(alice):
    response = logged_in(alice).post("/accounts/tokens/", {"name": "lab laptop"})
    assert response.status_code == 200
    raw = response.context["new_token"].raw
    assert raw.startswith("rlp_")
    assert raw in response.content.decode()
    token = ApiToken.objects.get(user=alice)
    assert token.name == "lab laptop"
    assert token.token_hash == hashlib.sha256(raw.encode()).hexdigest()


def test_tokens_page_shows_a_new_token_only_once(alice):
    client = logged_in(alice)
    raw = client.post("/accounts/tokens/", {"name": "lab laptop"}).context["new_token"].raw
    later = client.get("/accounts/tokens/")
    assert later.status_code == 200
    assert "lab laptop" in later.content.decode()
    assert raw not in later.content.decode()


def test_tokens_page_lists_only_your_own_tokens(alice, bob):
    api_token_create(user=bob, name="bobs-laptop")
    api_token_create(user=alice, name="alices-laptop")
    response = logged_in(alice).get("/accounts/tokens/")
    assert [t.name for t in response.context["tokens"]] == ["alices-laptop"]
    assert "bobs-laptop" not in response.content.decode()


def test_token_created_on_the_page_authenticates_api_calls(alice):
    raw = logged_in(alice).post("/accounts/tokens/", {"name": "cli"}).context["new_token"].raw
    response = bearer(raw).get(TOKENS_URL)
    assert response.status_code == 200


def test_revoking_on_the_page_disables_the_token(alice):
    issued = api_token_create(user=alice, name="cli")
    response = logged_in(alice).post(f"/accounts/tokens/{issued.token.pk}/revoke/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/tokens/"
    issued.token.refresh_from_db()
    assert issued.token.revoked_at is not None
    assert bearer(issued.raw).get(TOKENS_URL).status_code == 401


def test_revoking_another_users_token_on_the_page_is_not_found(alice, bob):
    bobs = api_token_create(user=bob, name="bobs")
    response = logged_in(alice).post(f"/accounts/tokens/{bobs.token.pk}/revoke/")
    assert response.status_code == 404
    bobs.token.refresh_from_db()
    assert bobs.token.revoked_at is None


def test_revoking_on_the_page_needs_a_post(alice):
    issued = api_token_create(user=alice, name="cli")
    response = logged_in(alice).get(f"/accounts/tokens/{issued.token.pk}/revoke/")
    assert response.status_code == 405
    issued.token.refresh_from_db()
    assert issued.token.revoked_at is None


def test_revoking_on_the_page_sends_anonymous_visitors_to_login(client, alice):
    issued = api_token_create(user=alice, name="cli")
    response = client.post(f"/accounts/tokens/{issued.token.pk}/revoke/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    issued.token.refresh_from_db()
    assert issued.token.revoked_at is None
