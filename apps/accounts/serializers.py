from datetime import datetime, timedelta

from django.utils import timezone
from rest_framework import serializers

from .models import PERSONAL_TOKEN_DEFAULT_DAYS, PERSONAL_TOKEN_MAX_DAYS, ApiToken


class ApiTokenSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiToken
        fields = ["id", "name", "display_prefix", "created_at", "last_used_at", "expires_at", "revoked_at"]
        read_only_fields = fields


class ApiTokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    expires_at = serializers.DateTimeField(
        required=False,
        help_text=f"When the token stops working: within {PERSONAL_TOKEN_MAX_DAYS} days; "
        f"{PERSONAL_TOKEN_DEFAULT_DAYS} days from now if left out.",
    )

    def validate_expires_at(self, value: datetime) -> datetime:
        now = timezone.now()
        if value <= now:
            raise serializers.ValidationError("Must be in the future.")
        if value > now + timedelta(days=PERSONAL_TOKEN_MAX_DAYS):
            raise serializers.ValidationError(f"Must be within {PERSONAL_TOKEN_MAX_DAYS} days.")
        return value

    def validate(self, attrs: dict) -> dict:
        attrs.setdefault("expires_at", timezone.now() + timedelta(days=PERSONAL_TOKEN_DEFAULT_DAYS))
        return attrs


class IssuedTokenSerializer(ApiTokenSerializer):
    token = serializers.CharField(read_only=True, help_text="The secret token. Shown only in this response.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]
        read_only_fields = fields


class PasswordLoginSerializer(serializers.Serializer):
    # As long as a username may be: a longer one cannot exist, and the lockout records it.
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False, max_length=4096)
    name = serializers.CharField(max_length=100, required=False, default="API login")
