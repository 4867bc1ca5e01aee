"""Typed models of every custom resource; the CRD schemas are generated from them."""

from sovereign_operator.api.base import API_VERSION, GROUP, MAX_NAME_LENGTH, VERSION, ApiModel
from sovereign_operator.api.common import Condition, ConditionType, LabelSelector, Toleration
from sovereign_operator.api.model_deployment import (
    EngineKind,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    ModelTask,
    MultiNodeBackend,
    Phase,
    PlanStatus,
    ScalingMetric,
)
from sovereign_operator.api.model_policy import ModelPolicy, ModelPolicySpec, ModelPolicyStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "MAX_NAME_LENGTH",
    "VERSION",
    "ApiModel",
    "Condition",
    "ConditionType",
    "EngineKind",
    "LabelSelector",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "ModelPolicy",
    "ModelPolicySpec",
    "ModelPolicyStatus",
    "ModelTask",
    "MultiNodeBackend",
    "Phase",
    "PlanStatus",
    "ScalingMetric",
    "Toleration",
]
