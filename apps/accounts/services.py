from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from apps.core.secrets import hash_secret, new_secret

from .models import TOKEN_PREFIX, ApiToken, User


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    raw: str  # shown to the user once, never stored


def user_create(*, username: str, password: str, email: str = "") -> User:
    user = User(username=username, email=email)
    user.set_password(password)
    user.full_clean()
    user.save()
    return user


@transaction.atomic
def api_token_create(*, user: User, name: str, expires_at: datetime | None = None) -> IssuedToken:
    secret = new_secret(TOKEN_PREFIX)
    token = ApiToken(
        user=user, name=name, token_hash=secret.hash, display_prefix=secret.display_prefix, expires_at=expires_at
    )
    token.full_clean()
    token.save()
    return IssuedToken(token=token, raw=secret.raw)


def api_token_revoke(*, token: ApiToken) -> None:
    # Compare-and-set: revoking twice keeps the first revocation time.
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    token.refresh_from_db(fields=["revoked_at"])


def api_token_authenticate(*, raw: str) -> ApiToken | None:
    if not raw.startswith(TOKEN_PREFIX):
        return None
    token = ApiToken.objects.active().select_related("user").filter(token_hash=hash_secret(raw)).first()
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    # Throttle the write: one update a minute per token is plenty for "last used".
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token
