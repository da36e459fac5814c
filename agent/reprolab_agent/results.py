"""What a finished run leaves: its executed notebook and the files it wrote (artifacts), read
back from the run's folder as regular files only (never through a link the run made) and
uploaded under the lease, each with its sha256. A rerun in a reproduction check compares its
arrays with the original run's here, where the data is."""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.parse
from pathlib import Path
from typing import Any

from . import protocol
from .cache import FileCache
from .client import Client, GaveUp
from .hashing import sha256_file
from .lease import LeaseLost, RunContext
from .sandbox import read_regular, regular_files

log = logging.getLogger("reprolab_agent")

MAX_ARTIFACTS = 200
MAX_ARTIFACT_BYTES = 1024 * 1024 * 1024
# The executed notebook is read whole: past this it is refused (a run can leave a sparse file of
# any size; its displayed output is capped well below by the output limit).
MAX_OUTPUT_BYTES = 512 * 1024 * 1024


class Results:
    def __init__(self, client: Client, cache: FileCache) -> None:
        self.client = client
        self.cache = cache

    def upload(self, ctx: RunContext, output: Path) -> None:
        try:  # never through a link the run left: the agent reads what the run could not
            body = read_regular(output, limit=MAX_OUTPUT_BYTES)
        except OSError as error:
            raise RuntimeError(f"the output notebook is not a regular file the run wrote ({error})") from error
        self.upload_notebook(ctx, body)

    def upload_notebook(self, ctx: RunContext, body: bytes) -> None:
        """The executed notebook, as the run's output."""
        ctx.call(
            "PUT",
            protocol.URL_OUTPUT,
            data=body,
            headers={
                "Content-Type": "application/x-ipynb+json",
                protocol.HEADER_LEASE_ID: ctx.lease_id,
                protocol.HEADER_SHA256: hashlib.sha256(body).hexdigest(),
            },
        )

    def artifacts(self, ctx: RunContext) -> list[Path]:
        """Files the notebook wrote in its working directory: not the agent's own files, not the
        inputs (unless the notebook changed them), not hidden folders; capped in count and size."""
        inputs = {f["path"]: f["sha256"] for f in ctx.run["files"]}
        found: list[Path] = []
        total = 0
        # Regular files only, never through links: a link the run made to what its sandbox hides
        # (the site's database) would otherwise be read and uploaded by the agent for it.
        for path in regular_files(ctx.workdir):
            relative = path.relative_to(ctx.workdir).as_posix()
            if relative in (protocol.NOTEBOOK_FILE, protocol.OUTPUT_FILE) or any(
                part.startswith(".") for part in relative.split("/")
            ):
                continue
            if relative in inputs and sha256_file(path) == inputs[relative]:
                continue
            total += path.stat().st_size
            if len(found) >= MAX_ARTIFACTS or total > MAX_ARTIFACT_BYTES:
                log.warning("run %s: artifact limit reached; %s and later files are not kept", ctx.run_id, relative)
                break
            found.append(path)
        return found

    def compare_with_reference(self, ctx: RunContext, item: dict[str, Any], mine: Path) -> dict[str, Any] | None:
        """For a rerun in a reproduction check: compare an array this run wrote with the
        reference run's array at the same path (`item` from the claim), here where the data is
        (on the GPU when there is one). The reference comes through the content-addressed cache,
        so a node that holds it already fetches nothing. Any failure only means the site
        compares instead."""
        try:
            from . import arrays

            xp, device = arrays.array_module()
        except ImportError:  # no NumPy on this node
            log.info("run %s: NumPy is not installed; the site compares %s", ctx.run_id, item["path"])
            return None
        reference = ctx.claim[protocol.CLAIM_REFERENCE]
        try:
            theirs = self.cache.fetch(self.client, item["url"], item["sha256"], ctx.token)
            result = arrays.compare_npy(
                str(theirs), str(mine), rtol=reference["rtol"], atol=reference["atol"], xp=xp, device=device
            )
        except (RuntimeError, GaveUp, OSError, ValueError, MemoryError) as error:
            log.warning("run %s: could not compare %s here (%s); the site will", ctx.run_id, item["path"], error)
            return None
        return {**result, "against_sha256": item["sha256"]}

    def upload_artifacts(self, ctx: RunContext, *, compare: bool = False) -> None:
        """Upload the artifacts; with `compare` (a succeeded rerun), each array that differs in
        bytes from its reference run's is compared first, and the comparison travels with it."""
        artifacts_url = ctx.url(protocol.URL_ARTIFACTS)
        if artifacts_url is None:
            return
        references = (
            {a["path"]: a for a in (ctx.claim.get(protocol.CLAIM_REFERENCE) or {}).get("arrays", [])} if compare else {}
        )
        for path in self.artifacts(ctx):
            relative = path.relative_to(ctx.workdir).as_posix()
            try:
                body = read_regular(path, limit=MAX_ARTIFACT_BYTES)
            except OSError as error:  # no longer a regular file, or past the limit: not kept
                log.warning("run %s: artifact %s not kept: %s", ctx.run_id, relative, error)
                continue
            sha256 = hashlib.sha256(body).hexdigest()
            headers = {}
            item = references.get(relative)
            # The very same bytes need no comparison: the site sees equal digests.
            comparison = self.compare_with_reference(ctx, item, path) if item and item["sha256"] != sha256 else None
            if comparison is not None:
                headers[protocol.HEADER_REFERENCE_COMPARISON] = json.dumps(comparison, separators=(",", ":"))
            try:
                self.put_artifact(ctx, relative, body, headers=headers)
            except RuntimeError as error:  # a refused artifact (bad name, too big) does not fail the run
                log.warning("run %s: artifact %s refused: %s", ctx.run_id, relative, error)

    def put_artifact(
        self,
        ctx: RunContext,
        relative: str,
        body: bytes,
        *,
        content_type: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        """One artifact of the run, at `relative`; RuntimeError when the site refuses it,
        LeaseLost when the run is no longer this node's."""
        artifacts_url = ctx.url(protocol.URL_ARTIFACTS)
        if artifacts_url is None:
            return
        reply = self.client.call(
            "PUT",
            artifacts_url + urllib.parse.quote(relative),
            data=body,
            token=ctx.token,
            headers={
                "Content-Type": content_type or "application/octet-stream",
                protocol.HEADER_LEASE_ID: ctx.lease_id,
                protocol.HEADER_SHA256: hashlib.sha256(body).hexdigest(),
                **(headers or {}),
            },
        )
        if reply.status in (401, 409):
            ctx.lease_lost.set()
            raise LeaseLost(f"run {ctx.run_id}: lease lost while uploading artifacts")
        if reply.status >= 400:
            raise RuntimeError(f"HTTP {reply.status} {reply.body[:200]!r}")
