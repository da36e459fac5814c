"""Small builders for test data: users, projects with members, notebook documents."""

import io
import itertools
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from apps.accounts.models import User
from apps.accounts.services import api_token_create
from apps.projects import services
from apps.projects.models import Project, Role

_counter = itertools.count(1)
PASSWORD = "correct-horse-battery"


def make_user(username: str | None = None, password: str = PASSWORD, *, staff: bool = False) -> User:
    username = username or f"user{next(_counter)}"
    user = User(username=username, email=f"{username}@example.org", is_staff=staff)
    user.set_password(password)
    user.save()
    return user


def make_token(user: User) -> str:
    return api_token_create(user=user, name="test").raw


def make_project(
    owner: User, *, slug: str | None = None, visibility: str = "private", members: dict[User, str] | None = None
) -> Project:
    slug = slug or f"project-{next(_counter)}"
    project = services.project_create(creator=owner, name=slug.title(), slug=slug, visibility=visibility)
    for user, role in (members or {}).items():
        services.membership_set(project=project, user=user, role=role, actor_role=Role.OWNER)
    return project


def notebook_document(
    *, source: str = "print('hello')", parameters: str | None = "alpha = 0.5\nsteps = 10", **extra: Any
) -> dict:
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    cells = [new_markdown_cell("# A test notebook")]
    if parameters is not None:
        cell = new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        cells.append(cell)
    cells.append(new_code_cell(source))
    nb.cells = cells
    nb.metadata.update(extra)
    return nb


def notebook_bytes(**kwargs: Any) -> bytes:
    return nbformat.writes(notebook_document(**kwargs)).encode()


def notebook_file(name: str = "analysis.ipynb", **kwargs: Any) -> io.BytesIO:
    stream = io.BytesIO(notebook_bytes(**kwargs))
    stream.name = name
    return stream


def upload_notebook(
    project: Project, uploader: User, path: str = "analysis.ipynb", **kwargs: Any
) -> services.NotebookUpload:
    return services.notebook_upload(project=project, path=path, content=notebook_file(**kwargs), uploader=uploader)
