"""`{% publications_of project as pubs %}`: the project's publications the viewer may see, each
with its latest visible version (for project pages, without the projects app knowing of review)."""

from typing import Any

from django import template

from ..access import publications_visible_to, versions_visible_to

register = template.Library()


@register.simple_tag(takes_context=True)
def publications_of(context: dict[str, Any], project: Any) -> list[Any]:
    user = context["request"].user
    found = []
    for publication in publications_visible_to(user).filter(project=project).order_by("-created_at")[:50]:
        latest = versions_visible_to(user, publication).order_by("-number").first()
        if latest is not None:
            found.append(latest)
    return found
