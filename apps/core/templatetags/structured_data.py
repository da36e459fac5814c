"""schema.org JSON-LD for public pages, embedded safely in <script type="application/ld+json">."""

import json
from typing import Any

from django import template
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

# Characters that could end the script element or start markup, escaped as JSON unicode escapes
# (the same set Django's json_script escapes).
_ESCAPES = {ord(">"): "\\u003E", ord("<"): "\\u003C", ord("&"): "\\u0026"}


@register.filter
def ld_json(data: dict[str, Any]) -> SafeString:
    text = json.dumps({"@context": "https://schema.org", **data}, default=str).translate(_ESCAPES)
    return mark_safe(f'<script type="application/ld+json">{text}</script>')  # noqa: S308 - escaped above
