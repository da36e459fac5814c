import json
from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from reprolab_agent import protocol
from rest_framework import serializers

from apps.core.api import BoundedJSONField
from apps.core.inputs import MAX_ID, MAX_NUMBER, json_problem

from .models import Node, Run, RunEvent
from .requirements import MAX_GPU_MEMORY_MB, MAX_GPUS, MAX_TAG_LENGTH, MAX_TAGS, read_requirements

MAX_RUN_INPUTS = 100  # datasets and dependencies of one run


class NodeSerializer(serializers.ModelSerializer):
    projects = serializers.SerializerMethodField()
    owner = serializers.CharField(source="owner.username", read_only=True)

    class Meta:
        model = Node
        fields = [
            "id",
            "name",
            "owner",
            "tags",
            "max_concurrency",
            "shared",
            "projects",
            "token_prefix",
            "capabilities",
            "last_seen_at",
            "revoked_at",
            "created_at",
        ]
        read_only_fields = ["token_prefix", "capabilities", "last_seen_at", "revoked_at", "created_at"]

    def get_projects(self, node: Node) -> list[str]:
        return [p.slug for p in node.projects.all()]


class NodeWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    tags = serializers.ListField(child=serializers.CharField(max_length=50), required=False, default=list)
    max_concurrency = serializers.IntegerField(min_value=1, max_value=64, required=False, default=1)
    shared = serializers.BooleanField(
        required=False, default=False, help_text="Take runs from everyone on the site. Staff only (else 403)."
    )
    projects = serializers.ListField(
        child=serializers.SlugField(),
        required=False,
        default=list,
        help_text="Project slugs whose runs it may take (you need the member role or higher in each).",
    )


class RegisteredNodeSerializer(NodeSerializer):
    token = serializers.CharField(read_only=True, help_text="The node token. Shown only in this response.")

    class Meta(NodeSerializer.Meta):
        fields = [*NodeSerializer.Meta.fields, "token"]


class DatasetInputSerializer(serializers.Serializer):
    name = serializers.SlugField()
    version = serializers.IntegerField(
        min_value=1, max_value=MAX_NUMBER, required=False, help_text="Default: the latest version."
    )


def _requirements_schema(*, request: bool) -> dict[str, Any]:
    """The OpenAPI schema of a run's requirements (apps/compute/requirements.py checks them)."""
    isolation: dict[str, Any] = {
        "type": "string",
        "nullable": True,
        "description": "The isolation the node must give it: "
        + ", ".join(
            f"{key} (a node reporting {level} or stronger)" for key, level in protocol.REQUIRED_ISOLATION.items()
        )
        + ". Absent or null: any node.",
    }
    if request:
        isolation["enum"] = [*protocol.REQUIRED_ISOLATION, None]
    properties: dict[str, Any] = {
        protocol.REQ_TAGS: {
            "type": "array",
            "items": {"type": "string", **({"minLength": 1, "maxLength": MAX_TAG_LENGTH} if request else {})},
            **({"maxItems": MAX_TAGS} if request else {}),
            "description": "Only nodes with all these tags (case-insensitive).",
        },
        protocol.REQ_GPU: {"type": "boolean", "description": "At least one GPU (the same as gpus: 1)."},
        protocol.REQ_GPUS: {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_GPUS,
            "description": "How many whole GPUs of the node the run gets for itself.",
        },
        protocol.REQ_MIN_GPU_MEMORY_MB: {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_GPU_MEMORY_MB,
            "description": "The memory each of its GPUs must have, in MiB (more than 0 means one GPU at least).",
        },
        protocol.REQ_ISOLATION: isolation,
        protocol.REQ_NETWORK: {
            "type": "boolean",
            "description": "The run needs network access: only nodes whose owner allows it take it.",
        },
    }
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if request:
        schema["additionalProperties"] = False
        schema["description"] = "What the run needs of its node; every key is optional."
    else:
        schema["required"] = list(properties)
        schema["description"] = "What the run needs of its node, every key present."
    return schema


@extend_schema_field(_requirements_schema(request=True))
class RequirementsField(BoundedJSONField):
    """A run's requirements as sent; the service checks them (clean_requirements)."""


class RunCreateSerializer(serializers.Serializer):
    project = serializers.SlugField()
    notebook = serializers.IntegerField(min_value=1, max_value=MAX_ID, help_text="Notebook id.")
    version = serializers.IntegerField(
        min_value=1, max_value=MAX_NUMBER, required=False, help_text="Default: the latest version."
    )
    parameters = BoundedJSONField(required=False, default=dict)
    datasets = DatasetInputSerializer(  # type: ignore[call-arg]  # DRF has max_length; the stubs lag
        many=True, required=False, default=list, max_length=MAX_RUN_INPUTS
    )
    requirements = RequirementsField(required=False, default=dict)
    priority = serializers.IntegerField(min_value=-100, max_value=100, required=False, default=0)
    depends_on = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ID),
        required=False,
        default=list,
        max_length=MAX_RUN_INPUTS,
        help_text="Run ids of this project that must succeed first.",
    )
    timeout_seconds = serializers.IntegerField(min_value=1, max_value=7 * 24 * 3600, required=False, default=3600)
    environment = serializers.RegexField(
        r"^[0-9a-fA-F]{64}$",
        required=False,
        default="",
        help_text="A lock's sha256 (a lock of this project's): run in that environment instead of the notebook "
        "version's or the project's declared one.",
        error_messages={"invalid": "Give an environment lock's sha256 (64 hexadecimal digits)."},
    )


class RunSerializer(serializers.ModelSerializer):
    project = serializers.CharField(source="project.slug", read_only=True)
    notebook = serializers.IntegerField(source="notebook_version.notebook_id", read_only=True)
    notebook_path = serializers.CharField(source="notebook_version.notebook.path", read_only=True)
    version = serializers.IntegerField(source="notebook_version.number", read_only=True)
    node = serializers.CharField(source="node.name", read_only=True, allow_null=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True, allow_null=True)
    datasets = serializers.SerializerMethodField()
    depends_on = serializers.SerializerMethodField()
    queue_seconds = serializers.SerializerMethodField()
    run_seconds = serializers.SerializerMethodField()
    output = serializers.SerializerMethodField()
    requirements = serializers.SerializerMethodField()
    environment = serializers.CharField(source="environment_lock.sha256", read_only=True, allow_null=True)

    class Meta:
        model = Run
        fields = [
            "id",
            "project",
            "notebook",
            "notebook_path",
            "version",
            "parameters",
            "datasets",
            "requirements",
            "environment",
            "priority",
            "depends_on",
            "timeout_seconds",
            "state",
            "attempt",
            "max_attempts",
            "node",
            "cancel_requested",
            "error",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
            "queue_seconds",
            "run_seconds",
            "last_event_seq",
            "output",
        ]

    @extend_schema_field(_requirements_schema(request=False))
    def get_requirements(self, run: Run) -> dict[str, Any]:
        return read_requirements(run.requirements).as_json()  # rows stored before a key existed too

    def get_datasets(self, run: Run) -> list[dict[str, Any]]:
        return [{"name": v.dataset.name, "version": v.number} for v in run.input_datasets.all()]

    def get_depends_on(self, run: Run) -> list[int]:
        return [d.pk for d in run.depends_on.all()]

    def get_queue_seconds(self, run: Run) -> float | None:
        return (run.started_at - run.created_at).total_seconds() if run.started_at else None

    def get_run_seconds(self, run: Run) -> float | None:
        if run.started_at and run.finished_at:
            return (run.finished_at - run.started_at).total_seconds()
        return None

    def get_output(self, run: Run) -> dict[str, Any] | None:
        if not run.output_sha256:
            return None
        return {
            "sha256": run.output_sha256,
            "size": run.output_size,
            "download_url": reverse("api-run-output", kwargs={"pk": run.pk}),
        }


class RunEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = RunEvent
        fields = ["seq", "attempt", "kind", "cell_index", "payload", "created_at"]


# --- the agent protocol -------------------------------------------------------------------------------
class AgentEventSerializer(serializers.Serializer):
    seq = serializers.IntegerField(
        min_value=1, max_value=MAX_NUMBER, help_text="Per-attempt sequence number from the agent."
    )
    kind = serializers.ChoiceField(choices=sorted(protocol.AGENT_EVENT_KINDS))
    cell_index = serializers.IntegerField(min_value=0, max_value=MAX_NUMBER, required=False, allow_null=True)
    payload = BoundedJSONField(required=False, default=dict, replace_nul=True)  # what the notebook printed


class AgentEventsSerializer(serializers.Serializer):
    lease_id = serializers.UUIDField()
    events = AgentEventSerializer(many=True, max_length=500)  # type: ignore[call-arg]  # DRF has it; the stubs lag


class LeaseSerializer(serializers.Serializer):
    lease_id = serializers.UUIDField()


class ArrayComparisonSerializer(serializers.Serializer):
    """What an agent found comparing a rerun's array with its reference run's (the fields of
    reprolab_agent.arrays.ArrayComparison, plus the sha256 of the array it compared against)."""

    against_sha256 = serializers.RegexField(r"^[0-9a-f]{64}$")
    status = serializers.ChoiceField(choices=["same", "within_tolerance", "different"])
    rtol = serializers.FloatField(min_value=0)
    atol = serializers.FloatField(min_value=0)
    elements = serializers.IntegerField(min_value=0, max_value=MAX_ID)
    unequal = serializers.IntegerField(min_value=0, max_value=MAX_ID)
    mismatched = serializers.IntegerField(min_value=0, max_value=MAX_ID)
    max_abs_diff = serializers.FloatField(allow_null=True, min_value=0)
    max_rel_diff = serializers.FloatField(allow_null=True, min_value=0)
    device = serializers.CharField(max_length=200, allow_blank=True)
    seconds = serializers.FloatField(min_value=0)
    reason = serializers.CharField(max_length=500, allow_blank=True)


class HeartbeatSerializer(LeaseSerializer):
    running = serializers.BooleanField(required=False, default=False)


class GradeObservationSerializer(serializers.Serializer):
    """What an agent saw of one test cell of a grading run (reprolab_agent.grading.observe)."""

    grade_id = serializers.CharField(max_length=200, allow_blank=True)
    cell_index = serializers.IntegerField(min_value=0, max_value=1_000_000, allow_null=True)
    reply = serializers.ChoiceField(choices=["ok", "error", "timeout", "none"])
    proof = serializers.BooleanField()
    reset = serializers.BooleanField()
    undone = serializers.ListField(
        child=serializers.CharField(max_length=200), max_length=50, required=False, default=list
    )
    restored = serializers.ListField(
        child=serializers.CharField(max_length=200), max_length=50, required=False, default=list
    )
    during = serializers.ListField(
        child=serializers.CharField(max_length=200), max_length=50, required=False, default=list
    )
    during_quiet = serializers.ListField(
        child=serializers.CharField(max_length=200), max_length=50, required=False, default=list
    )
    error = serializers.BooleanField()
    ename = serializers.CharField(max_length=200, allow_blank=True, trim_whitespace=False)
    evalue = serializers.CharField(max_length=2000, allow_blank=True, trim_whitespace=False)
    stderr = serializers.BooleanField()
    result = serializers.CharField(max_length=200, allow_blank=True, allow_null=True, trim_whitespace=False)
    seconds = serializers.FloatField(min_value=0, max_value=1e7)
    note = serializers.CharField(max_length=500, allow_blank=True, required=False, default="")


class GradingReportSerializer(serializers.Serializer):
    cells = serializers.ListField(child=GradeObservationSerializer(), max_length=10_000)
    finished = serializers.BooleanField()


class CompleteSerializer(LeaseSerializer):
    state = serializers.ChoiceField(choices=list(protocol.COMPLETION_STATES))
    error = serializers.CharField(required=False, allow_blank=True, default="", max_length=10_000)
    grading = GradingReportSerializer(
        required=False, help_text="A grading run only: what the node observed of each test cell."
    )


class ReleaseSerializer(LeaseSerializer):
    reason = serializers.ChoiceField(
        choices=[protocol.RELEASE_SHUTDOWN, protocol.RELEASE_INFRASTRUCTURE],
        help_text="shutdown: the agent is stopping (costs no attempt); infrastructure: the node could not run it.",
    )
    detail = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


# --- what a node says it has (hello) ---------------------------------------------------------------
MAX_CAPABILITIES_BYTES = 64 * 1024
MAX_MEGABYTES = 2**40  # a petabyte and more, in MiB
MAX_CPUS = 1_000_000
MAX_LIMIT = 2**31 - 1  # any one per-run limit (MiB, seconds, processes)
MAX_WARM_KERNELS = 16


def _text(max_length: int) -> serializers.CharField:
    return serializers.CharField(max_length=max_length, required=False, allow_blank=True)


def _count(maximum: int, *, minimum: int = 0) -> serializers.IntegerField:
    return serializers.IntegerField(min_value=minimum, max_value=maximum, required=False, allow_null=True)


class KeepingUnknownKeys(serializers.Serializer):
    """Declared fields are checked; other keys (what a newer agent reports) are kept as sent:
    nothing reads them, and the document as a whole is bounded by AgentHelloSerializer."""

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        return {**{key: item for key, item in data.items() if key not in self.fields}, **value}


class GpuCapabilitySerializer(KeepingUnknownKeys):
    """One GPU as reprolab_agent.probe reports it (the scheduler reads its memory)."""

    index = _count(4096)
    name = _text(200)
    memory_total_mb = _count(MAX_MEGABYTES)
    memory_mb = _count(MAX_MEGABYTES)  # the name older agents used
    compute_capability = _text(20)
    multiprocessor_count = _count(1_000_000)
    cuda_runtime_version = _text(50)
    cuda_driver_version = _text(50)
    cupy_version = _text(50)
    driver = _text(100)
    cuda = _text(50)


class LimitsCapabilitySerializer(KeepingUnknownKeys):
    """The node's per-run resource limits (reprolab_agent.limits); absent or 0: not limited."""

    memory_mb = _count(MAX_LIMIT)
    cpu_seconds = _count(MAX_LIMIT)
    processes = _count(MAX_LIMIT)
    output_mb = _count(MAX_LIMIT)
    workdir_mb = _count(MAX_LIMIT)


class CapabilitiesSerializer(KeepingUnknownKeys):
    """What reprolab_agent.probe.probe_capabilities() sends: types and bounds of what the
    scheduler and the node page read, so one node's odd report cannot break them for all."""

    hostname = _text(255)
    platform = serializers.DictField(child=_text(200), required=False)
    python_version = _text(100)
    python_implementation = _text(100)
    python_executable = _text(1000)
    cpu_count = _count(MAX_CPUS, minimum=1)
    cpu_count_total = _count(MAX_CPUS, minimum=1)
    memory_total_mb = _count(MAX_MEGABYTES)
    agent_version = _text(50)
    gpus = GpuCapabilitySerializer(many=True, required=False, max_length=256)  # type: ignore[call-arg]  # DRF has it
    gpu_error = _text(1000)
    # How the node isolates its runs (reprolab_agent.sandbox): bwrap > uid > none.
    isolation = serializers.ChoiceField(choices=list(protocol.ISOLATION_LEVELS), required=False)
    network = serializers.BooleanField(
        required=False, help_text="The node's owner lets runs that ask for the network reach it."
    )
    gpu_sharing = serializers.BooleanField(required=False, help_text="Runs may share a GPU.")
    warm_kernels = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        max_length=MAX_WARM_KERNELS,
        help_text="The kernels the node's warm pool holds ready, e.g. python3.",
    )
    limits = LimitsCapabilitySerializer(required=False)


class AgentHelloSerializer(serializers.Serializer):
    capabilities = CapabilitiesSerializer()

    def validate_capabilities(self, value: dict[str, Any]) -> dict[str, Any]:
        problem = json_problem(value, limit=10)
        if problem:
            raise serializers.ValidationError(problem)
        size = len(json.dumps(value))
        if size > MAX_CAPABILITIES_BYTES:
            raise serializers.ValidationError(
                f"The capabilities are {size} bytes as JSON; at most {MAX_CAPABILITIES_BYTES} are kept."
            )
        return value
