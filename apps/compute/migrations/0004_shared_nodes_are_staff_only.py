"""Only staff may share a node (apps/compute/trust.py). Nodes that non-staff users shared before
that rule become ordinary nodes again, and the embedded mode's local node keeps being shared:
its system account becomes staff."""

from django.db import migrations

LOCAL_NODE_OWNER = "local-node"  # apps/compute/management/commands/run_embedded.py


def forward(apps, schema_editor):
    User = apps.get_model("accounts", "User")
    Node = apps.get_model("compute", "Node")
    # An unusable password ("!…") marks the account run_embedded made; a person who signed up
    # under that name has a usable one and gains nothing.
    User.objects.filter(username=LOCAL_NODE_OWNER, nodes__shared=True, password__startswith="!").update(is_staff=True)
    Node.objects.filter(shared=True, owner__is_staff=False).update(shared=False)


class Migration(migrations.Migration):
    dependencies = [
        ("compute", "0003_reference_run_array_comparison_hidden_creator"),
        ("accounts", "0001_initial"),
    ]

    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
