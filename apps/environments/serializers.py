from rest_framework import serializers

from .models import Declaration


class EnvironmentSerializer(serializers.ModelSerializer):
    """A declaration and its lock, as one environment: what PUT .../environment/ answers."""

    sha256 = serializers.CharField(source="lock.sha256", help_text="The lock's: name it in POST /api/v1/runs/.")
    packages = serializers.JSONField(source="lock.packages")
    python_version = serializers.CharField(source="lock.python_version")
    requires_python = serializers.CharField(source="lock.requires_python")
    platform = serializers.CharField(source="lock.platform")
    layered = serializers.BooleanField(source="lock.layered")
    lock = serializers.CharField(source="lock.lock", help_text="The lock file nodes install from.")
    resolver = serializers.CharField(source="lock.resolver")
    declaration_kind = serializers.CharField(source="kind")
    declaration_name = serializers.CharField(source="name")
    declaration = serializers.CharField(source="text")

    class Meta:
        model = Declaration
        fields = [
            "sha256",
            "packages",
            "python_version",
            "requires_python",
            "platform",
            "layered",
            "declaration_kind",
            "declaration_name",
            "declaration",
            "lock",
            "resolver",
            "created_at",
        ]
        read_only_fields = fields


class DeclarationSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="requirements.txt (any .txt or .in), pyproject.toml or uv.lock.")
    layered = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Build over the node's base packages (a virtual environment with the system site "
        "packages visible), for runtimes such as Colab whose preinstalled stacks should not be reinstalled.",
    )
