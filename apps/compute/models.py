"""Compute nodes, runs and their events.

A run moves queued -> leased -> running -> succeeded | failed | cancelled, or back to queued
(attempt + 1) when its lease expires, up to `max_attempts`, then lost. Every transition is one
database transaction guarded by compare-and-set on the state and lease id.
"""

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from reprolab_agent import protocol


class Node(models.Model):
    """A registered compute node. Its agent authenticates with a token (sha256 stored)."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="nodes")
    name = models.CharField(max_length=100)
    tags = models.JSONField(default=list, blank=True)
    max_concurrency = models.PositiveSmallIntegerField(default=1)
    # Shared nodes take runs from everyone on the site, and only staff may share one (see
    # apps/compute/trust.py); otherwise the owner's runs and those of the projects listed.
    shared = models.BooleanField(default=False)
    projects = models.ManyToManyField("projects.Project", blank=True, related_name="nodes")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    token_prefix = models.CharField(max_length=12, editable=False)
    capabilities = models.JSONField(default=dict, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="unique_node_name_per_owner")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.shared and not self.owner.is_staff:
            raise ValidationError({"shared": "Only staff can share a node with everyone on the site."})

    @property
    def gpus(self) -> list[dict]:
        gpus = self.capabilities.get("gpus") if isinstance(self.capabilities, dict) else None
        return gpus if isinstance(gpus, list) else []


class RunState(models.TextChoices):
    QUEUED = protocol.QUEUED, "Queued"
    LEASED = protocol.LEASED, "Leased"
    RUNNING = protocol.RUNNING, "Running"
    SUCCEEDED = protocol.SUCCEEDED, "Succeeded"
    FAILED = protocol.FAILED, "Failed"
    CANCELLED = protocol.CANCELLED, "Cancelled"
    LOST = protocol.LOST, "Lost"


ACTIVE_STATES = (RunState.LEASED, RunState.RUNNING)
FINAL_STATES = (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.LOST)


class RunKind(models.TextChoices):
    NOTEBOOK = protocol.KIND_NOTEBOOK, "Notebook run"
    # A submitted notebook graded on a node (apps.courses.grading; reprolab_agent.grading).
    GRADING = protocol.KIND_GRADING, "Grading"


class Run(models.Model):
    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="runs")
    kind = models.CharField(max_length=10, choices=RunKind.choices, default=RunKind.NOTEBOOK)
    notebook_version = models.ForeignKey("projects.NotebookVersion", on_delete=models.PROTECT, related_name="runs")
    parameters = models.JSONField(default=dict, blank=True)
    input_datasets = models.ManyToManyField("projects.DatasetVersion", blank=True, related_name="runs")
    # apps/compute/requirements.py: {"tags", "gpu", "gpus", "min_gpu_memory_mb", "isolation", "network"}
    # (rows from before gpus, isolation and network hold only the first three keys or none)
    requirements = models.JSONField(default=dict, blank=True)
    # The lock the node builds the run's environment from (apps.environments); None: the node's
    # base environment. (`environment` is its snapshot: apps.reproducibility.EnvironmentSnapshot.)
    environment_lock = models.ForeignKey(
        "environments.EnvironmentLock", on_delete=models.PROTECT, null=True, blank=True, related_name="runs"
    )
    # The project's (or version's) declaration it was resolved from: its drift check and crate.
    environment_declaration = models.ForeignKey(
        "environments.Declaration", on_delete=models.PROTECT, null=True, blank=True, related_name="runs"
    )
    priority = models.IntegerField(default=0)
    depends_on = models.ManyToManyField("self", symmetrical=False, blank=True, related_name="dependents")
    timeout_seconds = models.PositiveIntegerField(default=3600)
    # A rerun in a reproduction check: the agent compares the `.npy` arrays it writes against
    # this run's, on the node where they are (and on its GPU when it has one), within this
    # tolerance ({"rtol": float, "atol": float}), and sends the comparison with each artifact.
    reference_run = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    reference_tolerance = models.JSONField(default=dict, blank=True)
    # Started by a single-blind reviewer: visible to its creator and the project's editors only
    # (its creator, node and environment would tell the authors who reviewed).
    creator_hidden = models.BooleanField(default=False)
    # An independent check (a reviewer's rerun): only the creator's own nodes, or staff-shared
    # nodes no member of the project owns, may run it (apps/compute/trust.py).
    independent = models.BooleanField(default=False)

    # A grading run: what the agent observed of each test cell, sent with its completion
    # ({"cells": [...], "finished": bool}, reprolab_agent.protocol.COMPLETE_GRADING).
    grading_report = models.JSONField(default=dict, blank=True)

    state = models.CharField(max_length=10, choices=RunState.choices, default=RunState.QUEUED, db_index=True)
    attempt = models.PositiveSmallIntegerField(default=1)
    max_attempts = models.PositiveSmallIntegerField(default=3)
    # Attempts handed back for free (an agent's shutdown): bounded, or a node could keep a run
    # forever by claiming and releasing it (REPROLAB_MAX_FREE_RELEASES).
    free_releases = models.PositiveSmallIntegerField(default=0)
    node = models.ForeignKey(Node, on_delete=models.SET_NULL, null=True, blank=True, related_name="runs")
    lease_id = models.UUIDField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    run_token_hash = models.CharField(max_length=64, blank=True, editable=False)
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True)

    output_sha256 = models.CharField(max_length=64, blank=True)
    output_size = models.PositiveBigIntegerField(null=True, blank=True)
    output_storage_name = models.CharField(max_length=300, blank=True)
    # The output uploaded under the current lease, not yet accepted by `complete`.
    pending_output = models.JSONField(default=dict, blank=True)

    last_event_seq = models.PositiveIntegerField(default=0)
    # Blank for a run the site makes itself (grading a submission: apps.courses.grading).
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="runs"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["state", "-priority", "queued_at"], name="run_queue_idx")]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.state})"

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES


class RunEvent(models.Model):
    """One progress event. `seq` numbers a run's events for viewers (resume with ?after=seq);
    (attempt, agent_seq) is the agent's idempotency key, so a resent batch stores nothing twice."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    attempt = models.PositiveSmallIntegerField()
    agent_seq = models.PositiveIntegerField(null=True, blank=True)
    kind = models.CharField(max_length=20)
    cell_index = models.IntegerField(null=True, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run_id", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["run", "seq"], name="unique_run_event_seq"),
            models.UniqueConstraint(
                fields=["run", "attempt", "agent_seq"],
                condition=models.Q(agent_seq__isnull=False),
                name="unique_run_event_agent_seq",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.run_id}#{self.seq} {self.kind}"


def new_lease_id() -> uuid.UUID:
    return uuid.uuid4()


class RunArtifact(models.Model):
    """A file the notebook wrote into its working directory, uploaded by the agent with its
    sha256 (verified) and stored content-addressed. Only the artifacts of the attempt that
    completed count: a requeue deletes what an earlier attempt sent."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="artifacts")
    attempt = models.PositiveSmallIntegerField()
    path = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    storage_name = models.CharField(max_length=300)
    # For a rerun's array: the node's comparison against the reference run's artifact at the
    # same path (reprolab_agent.arrays.ArrayComparison plus "against_sha256"); {} when none.
    comparison = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run_id", "path"]
        constraints = [
            models.UniqueConstraint(fields=["run", "attempt", "path"], name="unique_run_artifact_path"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id}:{self.path}"
