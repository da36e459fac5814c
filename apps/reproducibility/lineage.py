"""Lineage of a run: notebook version + parameters + dataset versions -> run -> outputs, and the
runs it depends on or that depend on it. As a graph (JSON), as W3C PROV-JSON, and as an SVG
picture laid out in columns by depth. Only runs the requester may see are included."""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

from django.db.models import QuerySet

from apps.compute.models import Run

MAX_RUNS = 60


def _neighbourhood(run: Run, visible: QuerySet[Run]) -> list[Run]:
    """The run, its ancestors and descendants through depends_on (bounded, visible only)."""
    seen: dict[int, Run] = {run.pk: run}
    frontier = [run]
    while frontier and len(seen) < MAX_RUNS:
        ids = [r.pk for r in frontier]
        related = visible.filter(dependents__in=ids) | visible.filter(depends_on__in=ids)
        frontier = [r for r in related.distinct().select_related("notebook_version__notebook") if r.pk not in seen]
        for r in frontier:
            seen[r.pk] = r
    return sorted(seen.values(), key=lambda r: r.pk)


def lineage_graph(run: Run, visible: QuerySet[Run]) -> dict[str, Any]:
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, str]] = []

    def node(node_id: str, kind: str, label: str, **extra: Any) -> str:
        nodes.setdefault(node_id, {"id": node_id, "kind": kind, "label": label, **extra})
        return node_id

    runs = _neighbourhood(run, visible)
    run_ids = {r.pk for r in runs}
    for r in runs:
        version = r.notebook_version
        run_node = node(f"run:{r.pk}", "run", f"run #{r.pk}", state=r.state, focus=r.pk == run.pk)
        notebook_node = node(
            f"notebook:{version.sha256}",
            "notebook",
            f"{version.notebook.path} v{version.number}",
            sha256=version.sha256,
        )
        edges.append({"source": notebook_node, "target": run_node, "relation": "used"})
        if r.parameters:
            label = ", ".join(f"{k}={v!r}" for k, v in sorted(r.parameters.items()))
            params_node = node(f"parameters:{r.pk}", "parameters", label[:80])
            edges.append({"source": params_node, "target": run_node, "relation": "used"})
        for dataset_version in r.input_datasets.select_related("dataset"):
            data_node = node(
                f"dataset:{dataset_version.pk}", "dataset", f"{dataset_version.dataset.name} v{dataset_version.number}"
            )
            edges.append({"source": data_node, "target": run_node, "relation": "used"})
        for dependency in r.depends_on.all():
            if dependency.pk in run_ids:
                edges.append({"source": f"run:{dependency.pk}", "target": run_node, "relation": "wasInformedBy"})
        if r.output_sha256:
            output_node = node(f"output:{r.output_sha256}", "output", f"output of run #{r.pk}", sha256=r.output_sha256)
            edges.append({"source": run_node, "target": output_node, "relation": "wasGeneratedBy"})
    return {"run": run.pk, "nodes": list(nodes.values()), "edges": edges}


def to_prov_json(graph: dict[str, Any], *, base_url: str) -> dict[str, Any]:
    """W3C PROV-JSON: entities (notebooks, parameters, datasets, outputs), activities (runs)."""
    prov: dict[str, Any] = {
        "prefix": {"reprolab": f"{base_url}/", "prov": "http://www.w3.org/ns/prov#"},
        "entity": {},
        "activity": {},
        "used": {},
        "wasGeneratedBy": {},
        "wasInformedBy": {},
    }
    for item in graph["nodes"]:
        key = f"reprolab:{item['id']}"
        attributes = {"prov:label": item["label"], "prov:type": f"reprolab:{item['kind']}"}
        if "sha256" in item:
            attributes["reprolab:sha256"] = item["sha256"]
        prov["activity" if item["kind"] == "run" else "entity"][key] = attributes
    for index, edge in enumerate(graph["edges"]):
        source, target = f"reprolab:{edge['source']}", f"reprolab:{edge['target']}"
        if edge["relation"] == "used":
            prov["used"][f"_:u{index}"] = {"prov:activity": target, "prov:entity": source}
        elif edge["relation"] == "wasGeneratedBy":
            prov["wasGeneratedBy"][f"_:g{index}"] = {"prov:entity": target, "prov:activity": source}
        else:
            prov["wasInformedBy"][f"_:i{index}"] = {"prov:informed": target, "prov:informant": source}
    return prov


COLUMN_WIDTH, ROW_HEIGHT, BOX_WIDTH, BOX_HEIGHT, MARGIN = 230, 60, 200, 38, 20
COLOURS = {
    "notebook": "#eef3ff",
    "parameters": "#f4f0ff",
    "dataset": "#fdf6e3",
    "run": "#e7f6ee",
    "output": "#f1f5f9",
}


def _depths(graph: dict[str, Any]) -> dict[str, int]:
    """Column of each node: the longest path from a source (inputs left, outputs right)."""
    incoming: dict[str, list[str]] = {n["id"]: [] for n in graph["nodes"]}
    for edge in graph["edges"]:
        incoming[edge["target"]].append(edge["source"])
    depth: dict[str, int] = {}

    def visit(node_id: str, trail: frozenset[str]) -> int:
        if node_id in depth:
            return depth[node_id]
        parents = [p for p in incoming[node_id] if p not in trail]
        depth[node_id] = 1 + max((visit(p, trail | {node_id}) for p in parents), default=-1)
        return depth[node_id]

    for node_id in incoming:
        visit(node_id, frozenset())
    return depth


def to_svg(graph: dict[str, Any]) -> str:
    """A self-contained SVG picture of the graph; every label is XML-escaped."""
    depths = _depths(graph)
    columns: dict[int, list[dict[str, Any]]] = {}
    for item in graph["nodes"]:
        columns.setdefault(depths[item["id"]], []).append(item)
    positions: dict[str, tuple[int, int]] = {}
    for column, items in columns.items():
        for row, item in enumerate(items):
            positions[item["id"]] = (MARGIN + column * COLUMN_WIDTH, MARGIN + row * ROW_HEIGHT)
    width = MARGIN * 2 + (max(columns, default=0) + 1) * COLUMN_WIDTH
    height = MARGIN * 2 + max((len(items) for items in columns.values()), default=1) * ROW_HEIGHT
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="system-ui, sans-serif" font-size="12" role="img">',
        "<title>Lineage</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#667085"/></marker></defs>',
    ]
    for edge in graph["edges"]:
        (x1, y1), (x2, y2) = positions[edge["source"]], positions[edge["target"]]
        parts.append(
            f'<line x1="{x1 + BOX_WIDTH}" y1="{y1 + BOX_HEIGHT // 2}" x2="{x2}" y2="{y2 + BOX_HEIGHT // 2}" '
            'stroke="#98a2b3" stroke-width="1.5" marker-end="url(#arrow)"/>'
        )
    for item in graph["nodes"]:
        x, y = positions[item["id"]]
        stroke = "#2f5bea" if item.get("focus") else "#cfd4dc"
        parts.append(
            f'<g><rect x="{x}" y="{y}" width="{BOX_WIDTH}" height="{BOX_HEIGHT}" rx="8" fill="{COLOURS.get(item["kind"], "#fff")}" '
            f'stroke="{stroke}" stroke-width="{2 if item.get("focus") else 1}"/>'
            f'<text x="{x + 10}" y="{y + 15}" fill="#667085" font-size="10">{escape(item["kind"])}'
            f"{escape(' · ' + item['state']) if 'state' in item else ''}</text>"
            f'<text x="{x + 10}" y="{y + 30}" fill="#1d2330">{escape(_clip(item["label"]))}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _clip(text: str, limit: int = 30) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
