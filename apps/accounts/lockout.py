"""Password-guessing lockout (django-axes) for the login form and `POST /api/v1/auth/token/`.

Axes counts failed logins per username and per address (AXES_LOCKOUT_PARAMETERS in settings);
past the limit both the wrong and the right password are answered 429 until the cool-off has
passed since the last attempt. The hooks it is configured with live here: which address a
request comes from, what a locked-out client is told, and what a successful login resets.
"""

import ipaddress
from typing import Any

from axes.helpers import get_cool_off
from axes.utils import reset as axes_reset
from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from rest_framework.settings import api_settings


def client_address(request: HttpRequest) -> str | None:
    """The client's address, trusting `X-Forwarded-For` exactly as far as DRF's throttles do
    (DJANGO_NUM_PROXIES); anything that is not an IP address falls back to the peer's."""
    remote = request.META.get("REMOTE_ADDR") or None
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    num_proxies = api_settings.NUM_PROXIES or 0
    if num_proxies and forwarded:
        hops = forwarded.split(",")
        candidate = hops[-min(num_proxies, len(hops))].strip()
        if _is_ip(candidate):
            return candidate
    return remote if remote is not None and _is_ip(remote) else None


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def cool_off_seconds() -> int:
    cool_off = get_cool_off()
    return int(cool_off.total_seconds()) if cool_off else 0


def lockout_message() -> str:
    minutes = max(1, round(cool_off_seconds() / 60))
    return (
        "Too many failed sign-in attempts for this account or from your address. "
        f"Try again in {minutes} minute{'s' if minutes != 1 else ''}; every attempt before then starts the wait again."
    )


def lockout_response(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: a JSON 429 on the API, a page on the site, both with Retry-After.

    Takes any further arguments: axes' async middleware passes (request, credentials) where
    the sync one passes (request, original_response, credentials), and neither is needed here.
    """
    message = lockout_message()
    response: HttpResponse
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": message}, status=429)
    else:
        response = render(request, "accounts/lockout.html", {"message": message}, status=429)
    response["Retry-After"] = str(cool_off_seconds())
    return response


@receiver(user_logged_in, dispatch_uid="accounts.lockout.reset_on_success")
def reset_on_success(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    """A successful login clears the failures of this username from this address only.

    Not axes' AXES_RESET_ON_SUCCESS: with lockout by username and by address, that deletes every
    failure from the address and every failure for the username, so an attacker could wipe the
    count of their guesses at someone else's password by logging into their own account.
    """
    if not settings.AXES_ENABLED or request is None:
        return
    address = client_address(request)
    if address is not None:
        axes_reset(ip=address, username=user.get_username())
