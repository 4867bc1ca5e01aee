"""Building blocks shared by several CRDs: quantities, labels, selectors, conditions."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints, model_validator

from sovereign_operator.api.base import ApiModel

_QUANTITY = re.compile(
    r"^(?P<number>[0-9]+(\.[0-9]+)?)(?P<suffix>m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
)
_SUFFIX_FACTORS: Final[dict[str, Decimal]] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
QUANTITY_PATTERN: Final = _QUANTITY.pattern


def parse_quantity(text: str) -> Decimal:
    """The value of a Kubernetes quantity such as `500m`, `4`, `64Gi`."""
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity; write e.g. '4', '500m', '64Gi'")
    return Decimal(match["number"]) * _SUFFIX_FACTORS[match["suffix"] or ""]


def _check_quantity(text: str) -> str:
    parse_quantity(text)
    return text


def _quantity_as_text(value: object) -> object:
    # YAML turns `cpu: 4` into an int; Kubernetes accepts both, so do we.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Quantity = Annotated[
    str,
    BeforeValidator(_quantity_as_text),
    StringConstraints(max_length=32),
    AfterValidator(_check_quantity),
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]
"""A Kubernetes resource quantity, kept as the user wrote it."""


def at_most(limit: str) -> AfterValidator:
    """A validator refusing quantities above `limit` (e.g. '16Ti'): absurd sizes are typos."""
    ceiling = parse_quantity(limit)

    def check(text: str | None) -> str | None:
        if text is not None and parse_quantity(text) > ceiling:
            raise ValueError(f"{text} is more than any node offers; at most {limit}")
        return text

    return AfterValidator(check)


_LABEL_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN: Final = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"


def _check_label_key(key: str) -> str:
    prefix, _, _name = key.rpartition("/")
    if len(prefix) > 253 or not _LABEL_NAME.match(key):
        raise ValueError(
            f"{key!r} is not a valid label key: an optional DNS prefix and '/', then up to "
            "63 characters of [A-Za-z0-9-_.] starting and ending alphanumeric"
        )
    return key


LabelKey = Annotated[str, StringConstraints(max_length=317), AfterValidator(_check_label_key)]
LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE_PATTERN)]
DnsLabel = Annotated[
    str, StringConstraints(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
]
Labels = Annotated[dict[LabelKey, LabelValue], Field(max_length=32)]


class LabelSelectorRequirement(ApiModel):
    """One set-based requirement of a label selector."""

    key: LabelKey = Field(description="The label key the requirement applies to.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="How the key relates to the values."
    )
    values: list[LabelValue] = Field(
        default_factory=list,
        max_length=64,
        description="Values for In and NotIn; must be empty for Exists and DoesNotExist.",
    )


class LabelSelector(ApiModel):
    """A Kubernetes label selector: every term must match."""

    match_labels: Labels = Field(
        default_factory=dict, description="Labels that must all be present with these values."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=16, description="Set-based requirements, all must hold."
    )


class Toleration(ApiModel):
    """A pod toleration, as in the core API."""

    key: LabelKey | None = Field(default=None, description="The taint key to tolerate.")
    operator: Literal["Exists", "Equal"] = Field(
        default="Equal", description="Equal matches key and value; Exists matches any value."
    )
    value: LabelValue | None = Field(default=None, description="The taint value to match.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="The taint effect to tolerate; empty tolerates all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, ge=0, description="How long a NoExecute taint is tolerated."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        # The same rules the core API applies; checked here so a bad toleration is refused
        # at admission, not when the operator applies the Deployment.
        if self.operator == "Exists" and self.value:
            raise ValueError("operator Exists takes no value; remove value or use Equal")
        if self.operator == "Equal" and self.key is None:
            raise ValueError("operator Equal needs a key; use Exists to tolerate every taint")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds only applies to effect NoExecute")
        return self


class ConditionType(StrEnum):
    """Condition types a ModelDeployment reports."""

    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    MODEL_VERIFIED = "ModelVerified"
    SCHEDULED = "Scheduled"
    POLICY_COMPLIANT = "PolicyCompliant"
    AUTOSCALER_ACTIVE = "AutoscalerActive"


class Condition(ApiModel):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: Annotated[str, StringConstraints(max_length=64)] = Field(
        description="The aspect this condition reports, e.g. Ready."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: Annotated[str, StringConstraints(max_length=128)] = Field(
        default="", description="A CamelCase word that says why, for machines."
    )
    message: Annotated[str, StringConstraints(max_length=2048)] = Field(
        default="", description="A sentence that says why, for people."
    )
    last_transition_time: datetime | None = Field(
        default=None, description="When the status last changed."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation this condition was computed from."
    )
