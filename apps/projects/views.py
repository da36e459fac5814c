"""Pages for researchers. Thin: resolve the project through `get_project_for` (404 to outsiders),
check the role, call a service, render. Service validation errors land on the form."""

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.core.paginator import Paginator
from django.db.models import Q
from django.forms import BaseForm, Form
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_POST
from rest_framework.exceptions import APIException

from apps.accounts.models import User
from apps.accounts.request_user import authenticated_user
from apps.core.inputs import MAX_NUMBER, int_or_404
from apps.core.uploads import blob_response, human_size
from apps.environments.declarations import MAX_DECLARATION_BYTES
from apps.environments.models import Declaration
from apps.environments.services import declare, set_project_environment

from . import services
from .forms import DatasetForm, DatasetUploadForm, EnvironmentForm, MemberForm, NotebookUploadForm, ProjectForm
from .models import Dataset, DatasetFile, Membership, Notebook, NotebookVersion, Project
from .permissions import (
    CAN_EDIT_PROJECT,
    CAN_MANAGE_MEMBERS,
    CAN_UPLOAD,
    get_project_for,
    has_role,
    require_role,
    role_of,
)
from .rendering import RenderResult, render_version
from .structured_data import notebook_ld, project_ld


def _attach_errors(form: BaseForm, error: ValidationError) -> None:
    """Put a service's ValidationError on the form, on the field it names where the form has it."""
    errors = error.message_dict if hasattr(error, "error_dict") else {NON_FIELD_ERRORS: error.messages}
    for field, field_messages in errors.items():
        for message in field_messages:
            form.add_error(field if field in form.fields else None, message)


def project_list(request: HttpRequest) -> HttpResponse:
    projects = Project.objects.visible_to(request.user)
    query = request.GET.get("q", "").strip()
    if query:
        projects = projects.filter(
            Q(name__icontains=query) | Q(slug__icontains=query) | Q(description__icontains=query)
        )
    page = Paginator(projects, 24).get_page(request.GET.get("page"))
    return render(request, "projects/project_list.html", {"page": page, "query": query})


@login_required
def project_create(request: HttpRequest) -> HttpResponse:
    form = ProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            project = services.project_create(creator=authenticated_user(request), **form.cleaned_data)
        except ValidationError as error:
            _attach_errors(form, error)
        else:
            messages.success(request, f"Project “{project.name}” created.")
            return redirect("projects:detail", slug=project.slug)
    return render(request, "projects/project_form.html", {"form": form})


def project_detail(request: HttpRequest, slug: str) -> HttpResponse:
    project = get_project_for(request.user, slug)
    context: dict[str, Any] = {
        "project": project,
        "role": role_of(project),
        "can_upload": has_role(project, CAN_UPLOAD),
        "can_manage": has_role(project, CAN_MANAGE_MEMBERS),
        "notebooks": project.notebooks.select_related("latest_version"),
        "datasets": project.datasets.select_related("latest_version"),
        "memberships": project.memberships.select_related("user").order_by("user__username"),
        "upload_form": NotebookUploadForm(),
        "dataset_form": DatasetForm(),
        "member_form": MemberForm(),
        "environment_form": EnvironmentForm(),
        "can_declare": has_role(project, CAN_EDIT_PROJECT),
        "environment": project.environment,
        "environment_source": "the project",
        "max_notebook_size": human_size(settings.REPROLAB_NOTEBOOK_MAX_BYTES),
        "structured_data": project_ld(request, project) if project.is_public else None,
    }
    return render(request, "projects/project_detail.html", context)


@require_POST
@login_required
def notebook_upload(request: HttpRequest, slug: str) -> HttpResponse:
    project = get_project_for(request.user, slug)
    require_role(project, CAN_UPLOAD, "upload notebooks")
    form = NotebookUploadForm(request.POST, request.FILES)
    if form.is_valid():
        upload = form.cleaned_data["file"]
        if upload.size > settings.REPROLAB_NOTEBOOK_MAX_BYTES:
            form.add_error(
                "file",
                f"The file is {human_size(upload.size)}; the limit is {human_size(settings.REPROLAB_NOTEBOOK_MAX_BYTES)}.",
            )
        else:
            try:
                declared = form.cleaned_data.get("environment")
                result = services.notebook_upload(
                    project=project,
                    path=form.cleaned_data["path"] or upload.name,
                    content=upload,
                    uploader=authenticated_user(request),
                    message=form.cleaned_data["message"],
                    environment=declare_upload(declared) if declared else None,
                )
            except ValidationError as error:
                _attach_errors(form, error)
            except APIException as error:  # resolving the declaration beside it: 503
                return _resolver_unavailable(request, project, form, error)
            else:
                if result.created:
                    messages.success(request, f"{result.notebook.path}: version {result.version.number} uploaded.")
                else:
                    messages.info(request, f"{result.notebook.path}: unchanged, still version {result.version.number}.")
                return redirect("projects:notebook", slug=project.slug, path=result.notebook.path)
    return _render_form_errors(request, project, form, "Upload failed")


def declare_upload(upload: UploadedFile) -> Declaration:
    if upload.size and upload.size > MAX_DECLARATION_BYTES:
        raise ValidationError({"environment": f"A declaration may be at most {MAX_DECLARATION_BYTES // 1024} KiB."})
    return declare(upload.name or "requirements.txt", upload.read())


def _resolver_unavailable(request: HttpRequest, project: Project, form: Form, error: APIException) -> HttpResponse:
    form.add_error(None, str(error.detail))
    response = _render_form_errors(request, project, form, "The resolver is unavailable")
    response.status_code = error.status_code
    return response


@login_required
@require_POST
def project_environment(request: HttpRequest, slug: str) -> HttpResponse:
    """The project page's "Declare the environment" form (the API's PUT .../environment/)."""
    project = get_project_for(request.user, slug)
    require_role(project, CAN_EDIT_PROJECT, "declare its environment")
    form = EnvironmentForm(request.POST, request.FILES)
    if form.is_valid():
        try:
            upload = form.cleaned_data["file"]
            if upload.size and upload.size > MAX_DECLARATION_BYTES:
                raise ValidationError({"file": f"A declaration may be at most {MAX_DECLARATION_BYTES // 1024} KiB."})
            declaration = declare(
                upload.name or "requirements.txt", upload.read(), layered=form.cleaned_data["layered"]
            )
        except ValidationError as error:
            _attach_errors(form, error)
        except APIException as error:  # the resolver timed out or could not start: 503
            return _resolver_unavailable(request, project, form, error)
        else:
            set_project_environment(project=project, declaration=declaration)
            lock = declaration.lock
            messages.success(request, f"Environment {lock.short} declared: {len(lock.packages)} packages, locked.")
            return redirect("projects:detail", slug=project.slug)
    return _render_form_errors(request, project, form, "Declaring the environment failed")


def _render_form_errors(request: HttpRequest, project: Project, form: Form, title: str) -> HttpResponse:
    return render(request, "projects/form_errors.html", {"project": project, "form": form, "title": title}, status=400)


@require_POST
@login_required
def dataset_create(request: HttpRequest, slug: str) -> HttpResponse:
    project = get_project_for(request.user, slug)
    require_role(project, CAN_UPLOAD, "create datasets")
    form = DatasetForm(request.POST)
    if form.is_valid():
        try:
            dataset = services.dataset_create(project=project, creator=authenticated_user(request), **form.cleaned_data)
        except ValidationError as error:
            _attach_errors(form, error)
        else:
            return redirect("projects:dataset", slug=project.slug, name=dataset.name)
    return _render_form_errors(request, project, form, "Could not create the dataset")


@require_POST
@login_required
def member_add(request: HttpRequest, slug: str) -> HttpResponse:
    project = get_project_for(request.user, slug)
    require_role(project, CAN_MANAGE_MEMBERS, "manage members")
    form = MemberForm(request.POST)
    if form.is_valid():
        user = User.objects.filter(username=form.cleaned_data["username"]).first()
        if user is None:
            form.add_error("username", f"No user named '{form.cleaned_data['username']}'.")
        else:
            try:
                services.membership_set(
                    project=project, user=user, role=form.cleaned_data["role"], actor_role=role_of(project)
                )
            except ValidationError as error:
                _attach_errors(form, error)
            else:
                messages.success(request, f"{user.username} is now {form.cleaned_data['role']}.")
                return redirect("projects:detail", slug=project.slug)
    return _render_form_errors(request, project, form, "Could not change members")


@require_POST
@login_required
def member_remove(request: HttpRequest, slug: str, username: str) -> HttpResponse:
    project = get_project_for(request.user, slug)
    membership = get_object_or_404(Membership, project=project, user__username=username)
    if membership.user_id != request.user.pk:
        require_role(project, CAN_MANAGE_MEMBERS, "manage members")
    try:
        services.membership_remove(membership=membership, actor_role=role_of(project))
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.info(request, f"{username} removed.")
    return redirect("projects:detail", slug=project.slug)


def _version_or_404(notebook: Notebook, number: str | None) -> NotebookVersion:
    if number is None:
        if notebook.latest_version is None:
            raise Http404("This notebook has no versions.")
        return notebook.latest_version
    return get_object_or_404(
        NotebookVersion, notebook=notebook, number=int_or_404(number, message="No such version.", maximum=MAX_NUMBER)
    )


def notebook_detail(request: HttpRequest, slug: str, path: str) -> HttpResponse:
    project = get_project_for(request.user, slug)
    notebook = get_object_or_404(Notebook.objects.select_related("latest_version"), project=project, path=path)
    version = _version_or_404(notebook, request.GET.get("v"))
    context = {
        "project": project,
        "notebook": notebook,
        "version": version,
        "versions": notebook.versions.select_related("created_by").order_by("-number"),
        "can_upload": has_role(project, CAN_UPLOAD),
        "upload_form": NotebookUploadForm(initial={"path": notebook.path}),
        "environment": version.environment or project.environment,
        "environment_source": "this version"
        if version.environment_id
        else "the project"
        if project.environment_id
        else "",
        "structured_data": notebook_ld(request, project, notebook, version) if project.is_public else None,
    }
    return render(request, "projects/notebook_detail.html", context)


# The render document may run its own scripts (MathJax, widgets) but in an opaque origin: no
# `allow-same-origin`, so it can read neither the site's cookies nor call its API as the viewer.
RENDER_CSP = (
    "sandbox allow-scripts allow-popups; "
    "default-src 'none'; img-src data: blob:; style-src 'unsafe-inline'; font-src data:; "
    "script-src 'unsafe-inline' https://cdnjs.cloudflare.com; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'self'"
)


@xframe_options_sameorigin
def notebook_render(request: HttpRequest, slug: str, version_id: int) -> HttpResponse:
    project = get_project_for(request.user, slug)
    version = get_object_or_404(NotebookVersion, pk=version_id, notebook__project=project)
    return sandboxed_render_response(request, render_version(version, requester=render_requester(request)))


def render_requester(request: HttpRequest) -> str:
    """Who a fresh render is charged to, for its rate limit."""
    return f"user:{request.user.pk}" if request.user.is_authenticated else f"ip:{request.META.get('REMOTE_ADDR')}"


def sandboxed_render_response(request: HttpRequest, result: RenderResult) -> HttpResponse:
    """A rendered notebook as the iframe document, under the sandboxing CSP (or why it failed).
    Views that serve it must be `xframe_options_sameorigin`."""
    if result.html is not None:
        response = HttpResponse(result.html, content_type="text/html; charset=utf-8")
    else:
        status = 429 if result.rate_limited else 422
        response = render(request, "projects/render_failed.html", {"error": result.error}, status=status)
        if result.rate_limited:
            response["Retry-After"] = "60"
    response["Content-Security-Policy"] = RENDER_CSP
    response["Cache-Control"] = "private, max-age=3600"
    return response


def notebook_download(request: HttpRequest, slug: str, version_id: int) -> FileResponse:
    project = get_project_for(request.user, slug)
    version = get_object_or_404(
        NotebookVersion.objects.select_related("notebook"), pk=version_id, notebook__project=project
    )
    return blob_response(
        storage_name=version.storage_name,
        filename=version.notebook.name,
        sha256=version.sha256,
        content_type="application/x-ipynb+json",
    )


def dataset_detail(request: HttpRequest, slug: str, name: str) -> HttpResponse:
    project = get_project_for(request.user, slug)
    dataset = get_object_or_404(Dataset.objects.select_related("latest_version"), project=project, name=name)
    versions = dataset.versions.select_related("created_by").order_by("-number")
    number = request.GET.get("v")
    version = dataset.latest_version
    if number is not None:
        version = get_object_or_404(versions, number=int_or_404(number, message="No such version.", maximum=MAX_NUMBER))
    form = DatasetUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST":
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        require_role(project, CAN_UPLOAD, "upload dataset files")
        if form.is_valid():
            files = request.FILES.getlist("data_files")
            try:
                new_version, created = services.dataset_add_files(
                    dataset=dataset,
                    files=[services.IncomingFile(path=f.name or "", content=f) for f in files],
                    uploader=authenticated_user(request),
                    message=form.cleaned_data["message"],
                )
            except ValidationError as error:
                _attach_errors(form, error)
            else:
                messages.success(request, f"Version {new_version.number} saved." if created else "Nothing changed.")
                return redirect("projects:dataset", slug=project.slug, name=dataset.name)
    context = {
        "project": project,
        "dataset": dataset,
        "version": version,
        "files": version.files.all() if version else [],
        "versions": versions,
        "can_upload": has_role(project, CAN_UPLOAD),
        "form": form,
    }
    return render(request, "projects/dataset_detail.html", context, status=400 if form.errors else 200)


def dataset_file_download(request: HttpRequest, slug: str, name: str, number: int, path: str) -> FileResponse:
    project = get_project_for(request.user, slug)
    file = get_object_or_404(
        DatasetFile, version__dataset__project=project, version__dataset__name=name, version__number=number, path=path
    )
    return blob_response(storage_name=file.storage_name, filename=path.rsplit("/", 1)[-1], sha256=file.sha256)
