from rest_framework import serializers

from .models import EnvironmentSnapshot, Reproduction

MAX_PACKAGES = 5000


class InputSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["notebook", "data"])
    path = serializers.CharField(max_length=500)
    sha256 = serializers.RegexField(r"^[0-9a-f]{64}$")
    size = serializers.IntegerField(min_value=0)
    dataset = serializers.CharField(max_length=200, required=False, allow_null=True)


class EnvironmentPayloadSerializer(serializers.Serializer):
    """The shape an agent must send; free-form parts are bounded so a node cannot store junk."""

    python = serializers.DictField(child=serializers.CharField(max_length=500, allow_blank=True))
    packages = serializers.DictField(child=serializers.CharField(max_length=200, allow_blank=True))
    os = serializers.DictField(child=serializers.CharField(max_length=500, allow_blank=True))
    cpu = serializers.DictField()
    memory_mb = serializers.IntegerField(allow_null=True, required=False)
    gpus = serializers.ListField(child=serializers.DictField(), max_length=64)
    cuda = serializers.DictField(required=False)
    kernel = serializers.DictField(required=False)
    env = serializers.DictField(child=serializers.CharField(max_length=1000, allow_blank=True), required=False)
    inputs = InputSerializer(many=True)
    agent_version = serializers.CharField(max_length=50, required=False)
    gpu_error = serializers.CharField(max_length=1000, required=False)

    def validate_packages(self, value: dict) -> dict:
        if len(value) > MAX_PACKAGES:
            raise serializers.ValidationError(f"At most {MAX_PACKAGES} packages.")
        return value


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
    requirements = serializers.JSONField(required=False, allow_null=True, default=None)
    latest_data = serializers.BooleanField(
        required=False, default=False, help_text="Rerun on each input dataset's newest version."
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
            "verdict",
            "report",
            "created_at",
            "finished_at",
        ]

    def get_reruns(self, reproduction: Reproduction) -> list[dict]:
        return [
            {"id": r.pk, "state": r.state, "node": r.node.name if r.node else None} for r in reproduction.reruns.all()
        ]
