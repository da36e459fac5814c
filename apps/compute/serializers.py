from typing import Any

from django.urls import reverse
from rest_framework import serializers

from .models import Node, Run, RunEvent


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
    version = serializers.IntegerField(min_value=1, required=False, help_text="Default: the latest version.")


class RunCreateSerializer(serializers.Serializer):
    project = serializers.SlugField()
    notebook = serializers.IntegerField(help_text="Notebook id.")
    version = serializers.IntegerField(min_value=1, required=False, help_text="Default: the latest version.")
    parameters = serializers.JSONField(required=False, default=dict)
    datasets = DatasetInputSerializer(many=True, required=False, default=list)
    requirements = serializers.JSONField(required=False, default=dict)
    priority = serializers.IntegerField(min_value=-100, max_value=100, required=False, default=0)
    depends_on = serializers.ListField(child=serializers.IntegerField(), required=False, default=list)
    timeout_seconds = serializers.IntegerField(min_value=1, max_value=7 * 24 * 3600, required=False, default=3600)


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
    seq = serializers.IntegerField(min_value=1, help_text="Per-attempt sequence number from the agent.")
    kind = serializers.ChoiceField(
        choices=sorted(["cell_started", "cell_executed", "stream", "output", "resources", "log"])
    )
    cell_index = serializers.IntegerField(required=False, allow_null=True)
    payload = serializers.JSONField(required=False, default=dict)


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
    elements = serializers.IntegerField(min_value=0)
    unequal = serializers.IntegerField(min_value=0)
    mismatched = serializers.IntegerField(min_value=0)
    max_abs_diff = serializers.FloatField(allow_null=True, min_value=0)
    max_rel_diff = serializers.FloatField(allow_null=True, min_value=0)
    device = serializers.CharField(max_length=200, allow_blank=True)
    seconds = serializers.FloatField(min_value=0)
    reason = serializers.CharField(max_length=500, allow_blank=True)


class HeartbeatSerializer(LeaseSerializer):
    running = serializers.BooleanField(required=False, default=False)


class CompleteSerializer(LeaseSerializer):
    state = serializers.ChoiceField(choices=["succeeded", "failed", "cancelled"])
    error = serializers.CharField(required=False, allow_blank=True, default="", max_length=10_000)


class ReleaseSerializer(LeaseSerializer):
    reason = serializers.ChoiceField(
        choices=["shutdown", "infrastructure"],
        help_text="shutdown: the agent is stopping (costs no attempt); infrastructure: the node could not run it.",
    )
    detail = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)
