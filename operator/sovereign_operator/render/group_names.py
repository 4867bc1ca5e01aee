"""Names and labels of multi-node groups, shared by the group renderers and `groups`.

A group is one replica of a multi-node plan: one StatefulSet, its headless Service and its
NetworkPolicy, all named after the group. The name holds the plan's template hash, so a spec
change creates new groups beside the old ones instead of changing pods in place: a group's
pods always come from one template.
"""

from __future__ import annotations

from typing import Final

from sovereign_operator.render.meta import labels, selector_labels

GROUP_LABEL: Final = "sovereign.dev/group"
"""On every object and pod of a group: the group's name."""
GROUP_INDEX_LABEL: Final = "sovereign.dev/group-index"
"""The replica number of the group, 0 to replicas - 1."""
POD_INDEX_LABEL: Final = "apps.kubernetes.io/pod-index"
"""Set on each StatefulSet pod by Kubernetes (1.28+): the pod's ordinal, its rank in the group."""
LEADER_INDEX: Final = "0"
HASH_CHARS: Final = 6
# The StatefulSet controller labels pods with `controller-revision-hash: NAME-HASH10`, and a
# label value holds at most 63 characters, so a StatefulSet name may hold at most 52.
MAX_GROUP_NAME: Final = 52


def group_name(name: str, index: int, template_hash: str) -> str:
    """`NAME-gINDEX-HASH6`: at most 52 characters for a 40-character name and 1000 replicas."""
    group = f"{name}-g{index}-{template_hash[:HASH_CHARS]}"
    if len(group) > MAX_GROUP_NAME:
        raise ValueError(
            f"group name {group!r} is longer than {MAX_GROUP_NAME} characters; "
            "metadata.name is limited to 40 characters and replicas to 1000"
        )
    return group


def group_selector(name: str, group: str) -> dict[str, str]:
    """The pods of one group: the engine selector narrowed to the group."""
    return {**selector_labels(name), GROUP_LABEL: group}


def group_labels(name: str, group: str, index: int) -> dict[str, str]:
    """The engine labels plus the group's name and replica number."""
    return {**labels(name), GROUP_LABEL: group, GROUP_INDEX_LABEL: str(index)}


def leader_selector(name: str) -> dict[str, str]:
    """Every group's leader (rank 0) of a deployment: the pods that serve the API."""
    return {**selector_labels(name), POD_INDEX_LABEL: LEADER_INDEX}


def leader_address(group: str, namespace: str) -> str:
    """The leader's stable DNS name through the group's headless Service (`svc` search path)."""
    return f"{group}-0.{group}.{namespace}.svc"
