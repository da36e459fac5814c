"""What a run ran on: the environment snapshot its agent captured, one per run attempt that
started executing. Stored as the agent sent it (validated for shape), plus a fingerprint so two
runs on identical environments are recognisable at a glance."""

from django.db import models


class EnvironmentSnapshot(models.Model):
    run = models.OneToOneField("compute.Run", on_delete=models.CASCADE, related_name="environment")
    attempt = models.PositiveSmallIntegerField()
    # {"python": {...}, "packages": {name: version}, "os": {...}, "cpu": {...}, "memory_mb": int,
    #  "gpus": [...], "cuda": {...}, "kernel": {...}, "env": {...}, "inputs": [{path, sha256, size}]}
    data = models.JSONField()
    # sha256 of the software stack (python, packages, OS, GPU/CUDA), not of the inputs.
    fingerprint = models.CharField(max_length=64, db_index=True)
    captured_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-captured_at"]

    def __str__(self) -> str:
        return f"environment of run {self.run_id}"


class Verdict(models.TextChoices):
    PENDING = "pending", "Pending"
    REPRODUCED = "reproduced", "Reproduced"
    WITHIN_TOLERANCE = "reproduced_within_tolerance", "Reproduced within tolerance"
    NOT_REPRODUCED = "not_reproduced", "Not reproduced"
    COULD_NOT_RUN = "could_not_run", "Could not run"


class Reproduction(models.Model):
    """A check that a run reproduces: `repeats` reruns of the same notebook version with the same
    parameters and data, compared with the original cell by cell within tolerances."""

    original = models.ForeignKey("compute.Run", on_delete=models.CASCADE, related_name="reproductions")
    # Started by a single-blind reviewer: only its creator and the project's editors see it
    # (the verdict reaches the authors through the review, without the reviewer's identity).
    creator_hidden = models.BooleanField(default=False)
    reruns = models.ManyToManyField("compute.Run", related_name="reproduction_of")
    rtol = models.FloatField(default=1e-9)
    atol = models.FloatField(default=0.0)
    repeats = models.PositiveSmallIntegerField(default=1)
    requirements = models.JSONField(default=dict, blank=True)
    # Rerun on each input dataset's newest version instead of the original's versions.
    latest_data = models.BooleanField(default=False)
    # Rerun on a fresh resolve of the original's declaration instead of its lock: a drift check
    # (the report names the packages that changed). By default reruns use the original's lock.
    fresh_environment = models.BooleanField(default=False)
    verdict = models.CharField(max_length=32, choices=Verdict.choices, default=Verdict.PENDING, db_index=True)
    # {"cells": [...], "values": [...], "environment": {...diff...}, "reason": "..."}
    report = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey("accounts.User", on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"reproduction {self.pk} of run {self.original_id}: {self.verdict}"


class RunReport(models.Model):
    """The human report of a run (what ran, where, on what, FAIR self-assessment and
    recommendations), built by a Celery task when the run ends, never in a request."""

    run = models.OneToOneField("compute.Run", on_delete=models.CASCADE, related_name="report")
    data = models.JSONField()
    built_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"report of run {self.run_id}"
