from django.contrib import admin

from .models import Dataset, DatasetVersion, Membership, Notebook, NotebookVersion, Project


class MembershipInline(admin.TabularInline[Membership, Project]):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin[Project]):
    list_display = ["slug", "name", "visibility", "license", "updated_at"]
    list_filter = ["visibility"]
    search_fields = ["slug", "name"]
    inlines = [MembershipInline]


@admin.register(Notebook)
class NotebookAdmin(admin.ModelAdmin[Notebook]):
    list_display = ["path", "project", "updated_at"]
    list_select_related = ["project"]
    search_fields = ["path", "project__slug"]


@admin.register(NotebookVersion)
class NotebookVersionAdmin(admin.ModelAdmin[NotebookVersion]):
    list_display = ["notebook", "number", "sha256", "size", "created_at"]
    list_select_related = ["notebook"]
    readonly_fields = [f.name for f in NotebookVersion._meta.fields]


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin[Dataset]):
    list_display = ["name", "project", "updated_at"]
    list_select_related = ["project"]


@admin.register(DatasetVersion)
class DatasetVersionAdmin(admin.ModelAdmin[DatasetVersion]):
    list_display = ["dataset", "number", "file_count", "total_size", "created_at"]
    list_select_related = ["dataset"]
