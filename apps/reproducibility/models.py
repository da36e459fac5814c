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
