"""Login lockout (django-axes) on the login form and POST /api/v1/auth/token/: by username and by
address, a clear 429 with Retry-After, the right password still works below the limit, and a
success clears that username's failures from that address."""

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from axes.models import AccessAttempt
from django.contrib.auth import SESSION_KEY
from django.test import AsyncClient, Client
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.models import ApiToken, User

from ..factories import PASSWORD, make_user

LOGIN_URL = "/accounts/login/"
TOKEN_URL = "/api/v1/auth/token/"
LIMIT = 3
COOLOFF_MINUTES = 15


@pytest.fixture(autouse=True)
def lockout(settings):
    """Axes as configured in base.py (the suite runs with it off), with a small limit."""
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = timedelta(minutes=COOLOFF_MINUTES)


@pytest.fixture
def alice(db) -> User:
    return make_user("alice")


@pytest.fixture
def mallory(db) -> User:
    return make_user("mallory")


def form_login(client: Client, username: str, password: str):
    return client.post(LOGIN_URL, {"username": username, "password": password})


def api_login(client: APIClient, username: str, password: str):
    return client.post(TOKEN_URL, {"username": username, "password": password}, format="json")


def web(address: str = "198.51.100.7") -> Client:
    return Client(REMOTE_ADDR=address)


def api(address: str = "198.51.100.7") -> APIClient:
    return APIClient(REMOTE_ADDR=address)


# --- the login form -------------------------------------------------------------------------------
def test_login_form_answers_429_with_a_page_at_the_failure_limit(alice):
    client = web()
    for _ in range(LIMIT - 1):
        assert form_login(client, "alice", "wrong").status_code == 200
    response = form_login(client, "alice", "wrong")
    assert response.status_code == 429
    assert response["Retry-After"] == str(COOLOFF_MINUTES * 60)
    page = response.content.decode()
    assert "Too many failed sign-in attempts" in page
    assert f"Try again in {COOLOFF_MINUTES} minutes" in page


def test_locked_out_login_form_refuses_the_right_password(alice):
    client = web()
    for _ in range(LIMIT):
        form_login(client, "alice", "wrong")
    response = form_login(client, "alice", PASSWORD)
    assert response.status_code == 429
    assert SESSION_KEY not in client.session


def test_login_form_accepts_the_right_password_below_the_limit(alice):
    client = web()
    for _ in range(LIMIT - 1):
        form_login(client, "alice", "wrong")
    response = form_login(client, "alice", PASSWORD)
    assert response.status_code == 302
    assert client.session[SESSION_KEY] == str(alice.pk)


def test_a_successful_form_login_resets_the_count(alice):
    client = web()
    for _ in range(LIMIT - 1):
        form_login(client, "alice", "wrong")
    assert form_login(client, "alice", PASSWORD).status_code == 302
    client = web()  # logged out again, same address
    for _ in range(LIMIT - 1):
        assert form_login(client, "alice", "wrong").status_code == 200
    assert form_login(client, "alice", PASSWORD).status_code == 302


# --- POST /api/v1/auth/token/ ---------------------------------------------------------------------
def test_token_endpoint_answers_json_429_with_retry_after_at_the_limit(alice):
    client = api()
    for _ in range(LIMIT - 1):
        assert api_login(client, "alice", "wrong").status_code == 401
    response = api_login(client, "alice", "wrong")
    assert response.status_code == 429
    assert response["Content-Type"] == "application/json"
    assert response["Retry-After"] == str(COOLOFF_MINUTES * 60)
    assert "Too many failed sign-in attempts" in response.json()["detail"]


def test_locked_out_token_endpoint_refuses_the_right_password(alice):
    client = api()
    for _ in range(LIMIT):
        api_login(client, "alice", "wrong")
    response = api_login(client, "alice", PASSWORD)
    assert response.status_code == 429
    assert response.json()["detail"]
    assert not ApiToken.objects.exists()


def test_token_endpoint_accepts_the_right_password_below_the_limit(alice):
    client = api()
    for _ in range(LIMIT - 1):
        api_login(client, "alice", "wrong")
    assert api_login(client, "alice", PASSWORD).status_code == 201


def test_a_successful_token_login_resets_the_count(alice):
    client = api()
    for _ in range(LIMIT - 1):
        api_login(client, "alice", "wrong")
    assert api_login(client, "alice", PASSWORD).status_code == 201
    for _ in range(LIMIT - 1):
        assert api_login(client, "alice", "wrong").status_code == 401
    assert api_login(client, "alice", PASSWORD).status_code == 201


def test_many_successful_token_logins_are_never_throttled(alice):
    client = api()
    for _ in range(25):  # the old per-address throttle refused the 21st in a minute
        assert api_login(client, "alice", PASSWORD).status_code == 201


def test_form_and_token_endpoint_share_one_count(alice):
    for _ in range(LIMIT - 1):
        form_login(web(), "alice", "wrong")
    assert api_login(api(), "alice", "wrong").status_code == 429


def test_the_lockout_works_through_the_async_middleware(alice):
    """Under daphne the middleware runs async; axes calls the lockout hook with other arguments."""
    client = AsyncClient()
    for _ in range(LIMIT - 1):
        api_login(api("127.0.0.1"), "alice", "wrong")  # AsyncClient's address
    response = async_to_sync(client.post)(
        TOKEN_URL, {"username": "alice", "password": "wrong"}, content_type="application/json"
    )
    assert response.status_code == 429
    assert "Too many failed sign-in attempts" in response.json()["detail"]


# --- by username and by address -------------------------------------------------------------------
def test_failures_for_one_username_from_many_addresses_lock_that_username(alice):
    for n in range(LIMIT):
        api_login(api(f"203.0.113.{n + 1}"), "alice", "wrong")
    assert api_login(api("203.0.113.200"), "alice", PASSWORD).status_code == 429


def test_failures_from_one_address_for_many_usernames_lock_that_address(alice):
    client = api()
    for n in range(LIMIT):
        api_login(client, f"guess{n}", "wrong")
    assert api_login(client, "alice", PASSWORD).status_code == 429
    assert api_login(api("203.0.113.9"), "alice", PASSWORD).status_code == 201  # another address


def test_logging_into_ones_own_account_does_not_reset_guesses_at_another(alice, mallory):
    client = api()
    for _ in range(LIMIT - 1):
        api_login(client, "alice", "wrong")
    assert api_login(client, "mallory", PASSWORD).status_code == 201
    assert api_login(client, "alice", "wrong").status_code == 429


def test_the_lockout_ends_after_the_cool_off(alice):
    client = api()
    for _ in range(LIMIT):
        api_login(client, "alice", "wrong")
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=COOLOFF_MINUTES + 1))
    assert api_login(client, "alice", PASSWORD).status_code == 201


def test_forwarded_for_is_not_trusted_without_proxies(alice):
    for n in range(LIMIT):
        api_login(APIClient(HTTP_X_FORWARDED_FOR=f"192.0.2.{n}"), f"guess{n}", "wrong")
    assert api_login(APIClient(HTTP_X_FORWARDED_FOR="192.0.2.99"), "alice", PASSWORD).status_code == 429


def test_forwarded_for_names_the_address_behind_the_configured_proxies(settings, alice):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    for n in range(LIMIT):
        api_login(APIClient(HTTP_X_FORWARDED_FOR="192.0.2.1"), f"guess{n}", "wrong")
    assert api_login(APIClient(HTTP_X_FORWARDED_FOR="192.0.2.2"), "alice", PASSWORD).status_code == 201
    assert api_login(APIClient(HTTP_X_FORWARDED_FOR="192.0.2.1"), "alice", PASSWORD).status_code == 429


@pytest.mark.parametrize("forwarded", ["not-an-address", "", " , ", "1.2.3.4.5"])
def test_a_forwarded_for_that_is_no_address_falls_back_to_the_peer(settings, alice, forwarded):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    response = api_login(APIClient(HTTP_X_FORWARDED_FOR=forwarded), "alice", "wrong")
    assert response.status_code == 401
    assert AccessAttempt.objects.get().ip_address == "127.0.0.1"


# --- bad input is a 4xx, never a 500 --------------------------------------------------------------
def test_an_overlong_username_is_refused_with_400(alice):
    response = api_login(api(), "a" * 10_000, "wrong")
    assert response.status_code == 400
    assert "username" in response.json()
    assert not AccessAttempt.objects.exists()


def test_a_username_with_a_null_character_is_refused_with_400(alice):
    response = api_login(api(), "ali\x00ce", "wrong")
    assert response.status_code == 400


def test_an_overlong_user_agent_is_recorded_without_error(alice):
    client = APIClient(HTTP_USER_AGENT="x" * 5_000)
    assert api_login(client, "alice", "wrong").status_code == 401
    assert len(AccessAttempt.objects.get().user_agent) == 255


def test_django_test_client_login_still_works_with_axes_on(alice):
    """Other tests log in with client.force_login(); it must not trip over axes."""
    client = Client()
    client.force_login(alice)
    assert client.get("/accounts/tokens/").status_code == 200
