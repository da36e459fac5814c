"""Render one notebook to sanitized HTML: notebook JSON on stdin, HTML on stdout. The optional
argument caps the process's address space in bytes.

Run as a child process (`python -m apps.projects.render_worker`) so the parent can kill it when
it runs too long and cap its memory: a pathological notebook must never hang a web worker.
Deliberately free of Django.
"""

import resource
import sys

import nh3

# Markup a notebook may show: ammonia's safe defaults plus the attributes that notebook HTML
# (markdown headings, pandas tables) relies on for anchors and styling. No event handlers, no
# style, no script, no SVG (it can carry script), and only ammonia's safe URL schemes.
ALLOWED_TAGS = set(nh3.ALLOWED_TAGS) | {"tfoot"}
ALLOWED_ATTRIBUTES = {**nh3.ALLOWED_ATTRIBUTES, "*": {"class", "id", "title", "lang", "dir"}, "tfoot": {"align"}}


def clean_html(element: object) -> str:
    """Replaces nbconvert's bleach-based `clean_html`, which escapes ordinary markup such as
    headings and paragraphs (it only allows a dozen inline tags) instead of keeping it."""
    text = element.decode() if isinstance(element, bytes) else str(element)
    return nh3.clean(
        text,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        clean_content_tags={"script", "style", "iframe", "object", "embed", "svg", "math", "template"},
        link_rel="noopener noreferrer nofollow",
    )


def render(notebook_json: str) -> str:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.reads(notebook_json, as_version=4)
    # sanitize_html routes markdown, raw cells and HTML/markdown/SVG outputs through
    # `clean_html` and drops JavaScript outputs. Images stay data URIs (embed_images stays off).
    exporter = HTMLExporter(template_name="lab", sanitize_html=True)
    exporter.register_filter("clean_html", clean_html)
    body, _ = exporter.from_notebook_node(nb)
    return body


def main() -> int:
    if len(sys.argv) > 1:
        # Set by the child itself (not preexec_fn, which is unsafe in a threaded web server).
        limit = int(sys.argv[1])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.stdout.write(render(sys.stdin.read()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
