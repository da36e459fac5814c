import json
from typing import Any

from rest_framework import serializers

from apps.compute.serializers import RequirementsField
from apps.core.inputs import MAX_ID

from .models import EnvironmentSnapshot, Reproduction

MAX_PACKAGES = 5000
MAX_INPUTS = 20_000
MAX_ENV_VARIABLES = 100
# The whole snapshot as stored: a real one is tens of KiB (the package list dominates).
MAX_SNAPSHOT_BYTES = 2 * 1024 * 1024


def _text(max_length: int, **kwargs: Any) -> serializers.CharField:
    return serializers.CharField(max_length=max_length, required=False, allow_blank=True, **kwargs)


def _number(maximum: int = MAX_ID) -> serializers.IntegerField:
    return serializers.IntegerField(min_value=0, max_value=maximum, required=False, allow_null=True)


class BoundedMapping(serializers.DictField):
    """A dict of short text keys to `child` values, with at most `max_items` entries."""

    def __init__(self, *, max_items: int, max_key_length: int = 200, **kwargs: Any) -> None:
        self.max_items = max_items
        self.max_key_length = max_key_length
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        value = super().to_internal_value(data)
        if len(value) > self.max_items:
            raise serializers.ValidationError(f"At most {self.max_items} entries.")
        for key in value:
            if not key or len(key) > self.max_key_length or "\x00" in key:
                raise serializers.ValidationError(f"Keys are 1 to {self.max_key_length} characters: {key[:50]!r}.")
        return value


class InputSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["notebook", "data"])
    path = serializers.CharField(max_length=500)
    sha256 = serializers.RegexField(r"^[0-9a-f]{64}$")
    size = serializers.IntegerField(min_value=0, max_value=MAX_ID)
    dataset = serializers.CharField(max_length=200, required=False, allow_null=True)


class PythonSerializer(serializers.Serializer):
    version = _text(100)
    implementation = _text(100)
    executable = _text(1000)


class OsSerializer(serializers.Serializer):
    system = _text(100)
    release = _text(200)
    version = _text(500)
    machine = _text(100)
    libc = _text(200)


class CpuSerializer(serializers.Serializer):
    model = _text(500)
    count = _number(1_000_000)
    count_total = _number(1_000_000)


class GpuSerializer(serializers.Serializer):
    index = _number(4096)
    name = _text(200)
    memory_total_mb = _number()
    compute_capability = _text(20)


class CudaSerializer(serializers.Serializer):
    runtime_version = _text(50, allow_null=True)
    driver_version = _text(50, allow_null=True)
    cupy_version = _text(50, allow_null=True)


class KernelSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)  # the environment page shows it
    display_name = _text(200)
    language = _text(100)
    argv = serializers.ListField(child=serializers.CharField(max_length=1000), max_length=50, required=False)
    error = _text(1000)
    environment = serializers.RegexField(r"^[0-9a-f]{64}$", required=False)  # a declared environment's kernel
    # How the agent chose it: "default" when the notebook names no kernel (run on its language's).
    chosen = serializers.ChoiceField(choices=["node", "notebook", "default"], required=False)


class DeclaredEnvironmentSerializer(serializers.Serializer):
    """The run's declared environment as its node built it (reprolab_agent.envs.describe_environment)."""

    declared = serializers.BooleanField()
    sha256 = serializers.RegexField(r"^[0-9a-f]{64}$", required=False)
    layered = serializers.BooleanField(required=False)
    matches_lock = serializers.BooleanField(required=False)
    differences = serializers.ListField(child=serializers.CharField(max_length=500), max_length=50, required=False)
    base_packages = BoundedMapping(
        child=serializers.CharField(max_length=200, allow_blank=True), max_items=MAX_PACKAGES, required=False
    )


class EnvironmentPayloadSerializer(serializers.Serializer):
    """The shape of reprolab_agent.environment.capture(). Every part is typed and bounded, and
    keys not declared here are dropped (at any level), so a node can neither store junk nor
    make pages that show the snapshot serve it back."""

    python = PythonSerializer()
    packages = BoundedMapping(child=serializers.CharField(max_length=200, allow_blank=True), max_items=MAX_PACKAGES)
    os = OsSerializer()
    cpu = CpuSerializer()
    memory_mb = _number()
    gpus = GpuSerializer(many=True, max_length=64)  # type: ignore[call-arg]  # DRF has max_length; the stubs lag
    cuda = CudaSerializer(required=False)
    kernel = KernelSerializer()
    env = BoundedMapping(
        child=serializers.CharField(max_length=1000, allow_blank=True, trim_whitespace=False),
        max_items=MAX_ENV_VARIABLES,
        max_key_length=100,
        required=False,
    )
    inputs = InputSerializer(many=True, max_length=MAX_INPUTS)  # type: ignore[call-arg]
    agent_version = serializers.CharField(max_length=50, required=False)
    gpu_error = serializers.CharField(max_length=1000, required=False)
    environment = DeclaredEnvironmentSerializer(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(attrs, default=str))
        if size > MAX_SNAPSHOT_BYTES:
            raise serializers.ValidationError(
                f"The snapshot is {size} bytes as JSON; the limit is {MAX_SNAPSHOT_BYTES}."
            )
        return attrs


class AgentEnvironmentSerializer(serializers.Serializer):
    lease_id = serializers.UUIDField()
    environment = EnvironmentPayloadSerializer()


class EnvironmentSnapshotSerializer(serializers.ModelSerializer):
    environment = serializers.JSONField(source="data")

    class Meta:
        model = EnvironmentSnapshot
        fields = ["run", "attempt", "fingerprint", "captured_at", "environment"]


class ReproduceSerializer(serializers.Serializer):
    rtol = serializers.FloatField(min_value=0, required=False, default=1e-9)
    atol = serializers.FloatField(min_value=0, required=False, default=0.0)
    repeats = serializers.IntegerField(min_value=1, max_value=10, required=False, default=1)
    requirements = RequirementsField(
        required=False, allow_null=True, default=None, help_text="Absent or null: what the original run needed."
    )
    latest_data = serializers.BooleanField(
        required=False, default=False, help_text="Rerun on each input dataset's newest version."
    )
    fresh_environment = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Rerun on a fresh resolve of the original's declared environment instead of its lock: shows "
        "drift (the report names the packages that changed).",
    )


class ReproductionSerializer(serializers.ModelSerializer):
    reruns = serializers.SerializerMethodField()

    class Meta:
        model = Reproduction
        fields = [
            "id",
            "original",
            "reruns",
            "rtol",
            "atol",
            "repeats",
            "latest_data",
            "fresh_environment",
            "verdict",
            "report",
            "created_at",
            "finished_at",
        ]

    def get_reruns(self, reproduction: Reproduction) -> list[dict]:
        return [
            {"id": r.pk, "state": r.state, "node": r.node.name if r.node else None} for r in reproduction.reruns.all()
        ]
