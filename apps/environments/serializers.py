from rest_framework import serializers

from .models import EnvironmentLock


class EnvironmentLockSerializer(serializers.ModelSerializer):
    class Meta:
        model = EnvironmentLock
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
