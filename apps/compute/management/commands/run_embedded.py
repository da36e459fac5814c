"""`make run`: the site and one local compute node, side by side, in the embedded mode.

The local node is an ordinary agent process talking to the site over HTTP, exactly like a lab
server or a Colab runtime would: one code path for local and remote execution. Its token is
rotated at every start and handed over in the environment (never on the command line).
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from apps.accounts.models import User
from apps.compute import services
from apps.compute.models import Node

LOCAL_NODE_OWNER = "local-node"
LOCAL_NODE_NAME = "local"


@transaction.atomic
def local_node_token(concurrency: int) -> str:
    """The local node's token, rotated. The node is shared (the one node of the embedded mode runs
    everybody's runs), so its owner is a staff system account that nobody can log in to."""
    owner, created = User.objects.get_or_create(username=LOCAL_NODE_OWNER, defaults={"is_active": True})
    if created:
        owner.set_unusable_password()
    elif owner.has_usable_password():
        # Someone signed up under the system account's name: never make their account staff.
        raise CommandError(f"The user '{LOCAL_NODE_OWNER}' is a person's account, not the local node's; rename it.")
    owner.is_staff = True
    owner.save()
    node = Node.objects.filter(owner=owner, name=LOCAL_NODE_NAME).first()
    if node is None:
        # Shared: in the embedded mode the one local node runs everybody's runs.
        return services.node_register(
            owner=owner, name=LOCAL_NODE_NAME, tags=["local"], max_concurrency=concurrency, shared=True
        ).token
    Node.objects.filter(pk=node.pk).update(max_concurrency=concurrency, shared=True)
    return services.node_rotate_token(node=node)


class Command(BaseCommand):
    help = "Serve the site and start the local compute node beside it (embedded mode only)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--concurrency", type=int, default=max(1, min(4, os.cpu_count() or 1)))

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.REPROLAB_DEMO_ALLOWED:
            raise CommandError("run_embedded is for the embedded mode (config.settings.local); refusing.")
        port, concurrency = options["port"], options["concurrency"]
        token = local_node_token(concurrency)
        agent_dir = Path(settings.BASE_DIR) / "agent"
        state = Path(settings.VAR_DIR) / "local-node"
        env = {
            **os.environ,
            "REPROLAB_NODE_TOKEN": token,
            "PYTHONPATH": os.pathsep.join(p for p in (str(agent_dir), os.environ.get("PYTHONPATH", "")) if p),
        }
        agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "reprolab_agent",
                "--server",
                f"http://127.0.0.1:{port}",
                "--concurrency",
                str(concurrency),
                "--work-dir",
                str(state / "work"),
                "--cache-dir",
                str(state / "cache"),
            ],
            env=env,
        )
        self.stdout.write(f"Local node '{LOCAL_NODE_NAME}' started (pid {agent.pid}, {concurrency} at a time).")
        try:
            call_command("runserver", f"127.0.0.1:{port}", use_reloader=False)
        finally:
            agent.terminate()
            try:
                agent.wait(timeout=10)
            except subprocess.TimeoutExpired:
                agent.kill()
