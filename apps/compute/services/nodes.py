"""Writes for nodes: registration, tokens, and what a node's agent says about itself."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.accounts.models import User
from apps.core.secrets import hash_secret, new_secret
from apps.projects.models import Project

from ..models import Node

NODE_TOKEN_PREFIX = "rln_"  # noqa: S105 - a prefix, not a secret


@dataclass(frozen=True)
class RegisteredNode:
    node: Node
    token: str  # shown once


@transaction.atomic
def node_register(
    *,
    owner: User,
    name: str,
    tags: Sequence[str] = (),
    max_concurrency: int = 1,
    shared: bool = False,
    projects: Iterable[Project] = (),
) -> RegisteredNode:
    secret = new_secret(NODE_TOKEN_PREFIX)
    node = Node(
        owner=owner,
        name=name,
        tags=sorted({t.strip().lower() for t in tags if t.strip()}),
        max_concurrency=max_concurrency,
        shared=shared,
        token_hash=secret.hash,
        token_prefix=secret.display_prefix,
    )
    node.full_clean()
    node.save()
    node.projects.set(list(projects))
    return RegisteredNode(node=node, token=secret.raw)


@transaction.atomic
def node_rotate_token(*, node: Node) -> str:
    secret = new_secret(NODE_TOKEN_PREFIX)
    Node.objects.filter(pk=node.pk).update(token_hash=secret.hash, token_prefix=secret.display_prefix, revoked_at=None)
    node.refresh_from_db()
    return secret.raw


def node_revoke(*, node: Node) -> None:
    Node.objects.filter(pk=node.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    node.refresh_from_db()


def node_authenticate(*, raw: str) -> Node | None:
    if not raw.startswith(NODE_TOKEN_PREFIX):
        return None
    node = Node.objects.filter(token_hash=hash_secret(raw), revoked_at__isnull=True).select_related("owner").first()
    if node is None or not node.owner.is_active:
        return None
    return node


def node_seen(*, node: Node, capabilities: dict[str, Any] | None = None) -> None:
    """Record that the node's agent is alive (and what it can do)."""
    changes: dict[str, Any] = {"last_seen_at": timezone.now()}
    if capabilities is not None:
        changes["capabilities"] = capabilities
    Node.objects.filter(pk=node.pk).update(**changes)
    for field, value in changes.items():
        setattr(node, field, value)
