"""The base model every CRD model derives from, and the names of our API group."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

GROUP = "sovereign.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# metadata.name is capped so every derived child name fits Kubernetes' limits: a
# StatefulSet name (<= 52 so its pods' controller-revision-hash label fits 63), a
# Service name (DNS-1035, <= 63) and label values (<= 63) with our suffixes appended.
MAX_NAME_LENGTH = 40
# Derived Service names must be DNS-1035 labels: start with a letter.
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


class ApiModel(BaseModel):
    """Frozen, camelCase on the wire, snake_case in Python, and strict about unknown fields.

    Unknown fields are refused rather than ignored: a typo such as `maxReplica` must fail
    loudly at admission instead of silently meaning "the default".
    """

    model_config = ConfigDict(
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=True,
    )

    def to_wire(self) -> dict[str, object]:
        """The camelCase JSON form, leaving out fields that were never set."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
