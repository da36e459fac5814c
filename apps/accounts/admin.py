from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from .models import ApiToken, User

admin.site.register(User, UserAdmin)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin[ApiToken]):
    list_display = ["name", "user", "display_prefix", "created_at", "last_used_at", "expires_at", "revoked_at"]
    readonly_fields = ["token_hash", "display_prefix", "created_at", "last_used_at"]
    list_select_related = ["user"]
