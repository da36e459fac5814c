from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from .forms import SignupForm, TokenCreateForm
from .models import ApiToken
from .request_user import authenticated_user
from .services import api_token_create, api_token_revoke


def signup(request: HttpRequest) -> HttpResponse:
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome to ReproLab, {user.username}.")
        return redirect("projects:list")
    return render(request, "accounts/signup.html", {"form": form})


@login_required
def tokens(request: HttpRequest) -> HttpResponse:
    form = TokenCreateForm(request.POST or None)
    new_token = None
    if request.method == "POST" and form.is_valid():
        new_token = api_token_create(user=authenticated_user(request), name=form.cleaned_data["name"])
        form = TokenCreateForm()
    context = {
        "form": form,
        "new_token": new_token,
        "tokens": ApiToken.objects.filter(user=authenticated_user(request)),
    }
    return render(request, "accounts/tokens.html", context)


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=pk, user=authenticated_user(request))  # someone else's token: 404
    api_token_revoke(token=token)
    messages.info(request, f"Token “{token.name}” revoked.")
    return redirect("accounts:tokens")
