"""Loading resources from YAML text and dumping them back, with errors that point at the field.

``load_resources`` parses multi-document YAML (rejecting duplicate keys, which PyYAML would
otherwise silently resolve to the last one) and validates every document; ``load_sources`` does
so for several texts (the files of a directory). Every problem of every document is reported,
each as ``<source>[ (document N)]: <Kind> "<name>": <field.path>: <problem>``, in one
:class:`ResourceError`, so that a bad directory is fixed in one round. Only text is handled
here: reading files is the caller's business.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml
from pydantic import ValidationError

from cronloop.api.cronjob import CronJob
from cronloop.api.job import Job
from cronloop.api.subjob import SubJob

__all__ = [
    "KINDS",
    "Resource",
    "ResourceError",
    "dump",
    "dump_yaml",
    "load_resources",
    "load_sources",
    "parse_resource",
]

Resource = CronJob | Job | SubJob
"""Any resource this API version defines."""

KINDS: dict[str, type[CronJob] | type[Job] | type[SubJob]] = {
    "CronJob": CronJob,
    "Job": Job,
    "SubJob": SubJob,
}

_MESSAGES = {
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
}


class ResourceError(ValueError):
    """A document that is not a valid resource; ``problems`` lists ``(field path, problem)``.

    ``where`` names the document (source, document number, kind and name). An error about
    several invalid documents (see :meth:`combine`) has one ``ResourceError`` per document in
    ``errors``, and ``where`` and ``problems`` of the first; ``str()`` is always every problem,
    one line each.
    """

    def __init__(self, where: str, problems: Sequence[tuple[str, str]]) -> None:
        self.where = where
        self.problems = tuple(problems)
        self.errors: tuple[ResourceError, ...] = (self,)
        lines = [f"{where}: {path}: {msg}" if path else f"{where}: {msg}" for path, msg in problems]
        super().__init__("\n".join(lines))

    @classmethod
    def combine(cls, errors: Sequence[ResourceError]) -> ResourceError:
        """One error for all of ``errors`` (a single document's error is returned as it is)."""
        flat = tuple(e for error in errors for e in error.errors)
        if not flat:
            raise ValueError("combine needs at least one error")
        if len(flat) == 1:
            return flat[0]
        combined = cls(flat[0].where, flat[0].problems)
        combined.errors = flat
        combined.args = ("\n".join(str(e) for e in flat),)
        return combined


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate mapping keys."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("inline", "process"):
            continue  # the discriminator tag of the step union, not a field
        else:
            out += f".{part}" if out else part
    return out


def _message(error: Mapping[str, Any]) -> str:
    kind = str(error["type"])
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    msg = str(error["msg"])
    if kind == "union_tag_invalid":
        return f"runtime must be one of inline, process (got {error['input'].get('runtime')!r})"
    if kind == "union_tag_not_found":
        return "runtime is required (inline or process)"
    return msg.removeprefix("Value error, ").replace("Input should be", "must be")


def _describe(data: Mapping[str, Any], kind: str) -> str:
    metadata = data.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return f'{kind} "{name}"' if isinstance(name, str) and name else f"{kind} (unnamed)"


def parse_resource(data: Any, *, source: str = "<input>") -> Resource:
    """Validate one already-parsed document (a mapping) into its resource type."""
    if not isinstance(data, Mapping):
        raise ResourceError(source, [("", f"expected a mapping, got {type(data).__name__}")])
    kind = data.get("kind")
    if kind not in KINDS:
        allowed = ", ".join(KINDS)
        problem = "required field is missing" if kind is None else f"unknown kind {kind!r}"
        raise ResourceError(source, [("kind", f"{problem} (expected one of {allowed})")])
    where = f"{source}: {_describe(data, kind)}"
    try:
        return KINDS[kind].model_validate(data)
    except ValidationError as exc:
        problems = [(_path(err["loc"]), _message(err)) for err in exc.errors()]
        raise ResourceError(where, problems) from None


def load_resources(text: str, *, source: str = "<string>") -> list[Resource]:
    """Parse every YAML document of ``text`` into a resource; empty documents are skipped.

    Raises :class:`ResourceError` naming every invalid document (``source``, the document
    number when there are several, the resource) and every bad field of each; see
    :meth:`ResourceError.combine`. Text that is not YAML is one problem (its line and column).
    """
    try:
        documents = list(yaml.load_all(text, Loader=_UniqueKeyLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}: line {mark.line + 1}, column {mark.column + 1}" if mark else source
        raise ResourceError(where, [("", f"invalid YAML: {exc.problem}")]) from None
    except yaml.YAMLError as exc:
        raise ResourceError(source, [("", f"invalid YAML: {exc}")]) from None
    several = len(documents) > 1
    resources: list[Resource] = []
    errors: list[ResourceError] = []
    for index, document in enumerate(documents, start=1):
        if document is None:
            continue
        where = f"{source} (document {index})" if several else source
        try:
            resources.append(parse_resource(document, source=where))
        except ResourceError as exc:
            errors.append(exc)
    if errors:
        raise ResourceError.combine(errors)
    return resources


def load_sources(sources: Iterable[tuple[str, str]]) -> list[Resource]:
    """The resources of every ``(source, text)`` pair, in order (see :func:`load_resources`).

    Every source is validated before anything is returned: a :class:`ResourceError` names
    every invalid document of every source, so a caller applying a directory applies all of
    it or nothing and can report every bad file at once.
    """
    resources: list[Resource] = []
    errors: list[ResourceError] = []
    for source, text in sources:
        try:
            resources += load_resources(text, source=source)
        except ResourceError as exc:
            errors.append(exc)
    if errors:
        raise ResourceError.combine(errors)
    return resources


def dump(resource: Resource) -> dict[str, Any]:
    """A JSON-able dict of ``resource`` with camelCase keys; unset optional fields are left out."""
    return resource.model_dump(mode="json", by_alias=True, exclude_none=True)


def dump_yaml(resources: Sequence[Resource]) -> str:
    """Multi-document YAML of ``resources`` that :func:`load_resources` reads back."""
    return yaml.safe_dump_all([dump(r) for r in resources], sort_keys=False)
