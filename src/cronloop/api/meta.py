"""Object metadata shared by every resource, and the pydantic base class of the API types.

Resources look like Kubernetes objects: ``apiVersion``, ``kind``, ``metadata``, ``spec`` and
``status``. Field names are camelCase on the wire (YAML/JSON) and snake_case in Python; the
:class:`ApiModel` base class does the translation and forbids unknown fields so that a typo in
a spec is an error instead of a silently ignored setting.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

__all__ = [
    "API_VERSION",
    "MAX_NAME_LENGTH",
    "MAX_SUBDOMAIN_LENGTH",
    "ApiModel",
    "AwareDatetime",
    "ObjectMeta",
    "ObjectRef",
    "OwnerReference",
    "check_label",
    "validate_label_name",
    "validate_name",
]

API_VERSION: Final = "cronloop.dev/v1"

#: Names of CronJobs, Jobs and targets are DNS-1123 *labels* (at most 63 characters, no dots)
#: so that they stay usable as host names, label values and file names. Generated names built
#: from them (``<job>-<target>`` for sub-jobs) are DNS-1123 *subdomains* of up to 253.
MAX_NAME_LENGTH = 63
MAX_SUBDOMAIN_LENGTH = 253

_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_KEY_RE = re.compile(
    r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
)
_LABEL_VALUE_RE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")


def validate_label_name(name: str, *, max_length: int = MAX_NAME_LENGTH) -> str:
    """Check that ``name`` is a DNS-1123 label (``a-z 0-9 -``, <= ``max_length``); return it."""
    if not name:
        raise ValueError("name must not be empty")
    if len(name) > max_length:
        raise ValueError(f"name {name!r} is {len(name)} characters long (at most {max_length})")
    if not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"name {name!r} must consist of lower-case letters, digits and '-', "
            "and start and end with a letter or digit"
        )
    return name


def validate_name(name: str) -> str:
    """Check that ``name`` is a DNS-1123 subdomain (labels joined by dots, <= 253); return it.

    This is the rule of :attr:`ObjectMeta.name`; each kind narrows it (CronJob and Job names
    are labels, see :mod:`cronloop.api.cronjob` and :mod:`cronloop.api.job`).
    """
    if not name:
        raise ValueError("name must not be empty")
    if len(name) > MAX_SUBDOMAIN_LENGTH:
        raise ValueError(
            f"name {name[:20]!r}... is {len(name)} characters long (at most {MAX_SUBDOMAIN_LENGTH})"
        )
    if not _SUBDOMAIN_RE.fullmatch(name):
        raise ValueError(
            f"name {name!r} must consist of lower-case letters, digits, '-' and '.', "
            "and start and end with a letter or digit"
        )
    return name


def _require_aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must carry a time zone (e.g. '2026-01-01T00:00:00Z')")
    return value


#: A datetime that must carry a UTC offset: naive timestamps are ambiguous across zones.
AwareDatetime = Annotated[datetime, AfterValidator(_require_aware)]


class ApiModel(BaseModel):
    """Base of every API type: camelCase aliases, unknown fields rejected, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=False,
    )


class OwnerReference(ApiModel):
    """The object that owns this one (a Job owned by its CronJob, a SubJob by its Job)."""

    kind: str = Field(min_length=1)
    name: Annotated[str, AfterValidator(validate_name)]
    uid: str = Field(min_length=1)


class ObjectRef(ApiModel):
    """A reference to another resource of a known kind: its name and, once known, its uid."""

    name: Annotated[str, AfterValidator(validate_name)]
    uid: str | None = None


class ObjectMeta(ApiModel):
    """Identity and bookkeeping of a resource.

    ``resource_version`` is an integer: the store bumps it on every write and compares it in
    compare-and-set updates, so it must order. ``generation`` counts spec changes.
    """

    name: Annotated[str, AfterValidator(validate_name)]
    uid: str | None = None
    resource_version: int | None = Field(default=None, ge=0)
    generation: int | None = Field(default=None, ge=0)
    creation_timestamp: AwareDatetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    owner_references: tuple[OwnerReference, ...] = ()

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for key, value in labels.items():
            check_label(key, value)
        return labels


def check_label(key: str, value: str) -> None:
    """Raise ``ValueError`` unless ``key: value`` is a valid Kubernetes-style label."""
    if len(key) > 253 or not _LABEL_KEY_RE.fullmatch(key):
        raise ValueError(f"label key {key!r} is not a valid label key")
    if len(value) > MAX_NAME_LENGTH or not _LABEL_VALUE_RE.fullmatch(value):
        raise ValueError(f"label {key!r} has an invalid value {value!r}")
