from datetime import timedelta

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from .forms import SignupForm, TokenCreateForm
from .lockout import client_address
from .models import PERSONAL_TOKEN_DEFAULT_DAYS, ApiToken
from .rates import signup_retry_after, signup_slot_take
from .request_user import authenticated_user
from .services import api_token_create, api_token_revoke

# Expired and revoked tokens shown under the active ones (the rest stay in the database).
PAST_TOKENS_SHOWN = 20


def signup(request: HttpRequest) -> HttpResponse:
    form = SignupForm(request.POST or None)
    next_url = request.POST.get("next") or request.GET.get("next") or ""
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        next_url = ""  # only back into this site (an invitation link, say)
    if request.method == "POST" and not signup_slot_take(address=client_address(request)):
        retry_after = signup_retry_after()
        context = {"form": SignupForm(), "next": next_url, "rate_limited_minutes": max(1, round(retry_after / 60))}
        response = render(request, "accounts/signup.html", context, status=429)
        response["Retry-After"] = str(retry_after)
        return response
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome to ReproLab, {user.username}.")
        return redirect(next_url or "projects:list")
    return render(request, "accounts/signup.html", {"form": form, "next": next_url})


@login_required
def tokens(request: HttpRequest) -> HttpResponse:
    user = authenticated_user(request)
    form = TokenCreateForm(request.POST or None)
    new_token = None
    if request.method == "POST" and form.is_valid():
        days = form.cleaned_data["lifetime_days"] or PERSONAL_TOKEN_DEFAULT_DAYS
        expires_at = timezone.now() + timedelta(days=days)
        new_token = api_token_create(user=user, name=form.cleaned_data["name"], expires_at=expires_at)
        form = TokenCreateForm()
    context = {
        "form": form,
        "new_token": new_token,
        "tokens": ApiToken.objects.filter(user=user).active(),
        "past_tokens": ApiToken.objects.filter(user=user).inactive()[:PAST_TOKENS_SHOWN],
    }
    return render(request, "accounts/tokens.html", context)


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=pk, user=authenticated_user(request))  # someone else's token: 404
    api_token_revoke(token=token)
    messages.info(request, f"Token “{token.name}” revoked.")
    return redirect("accounts:tokens")
