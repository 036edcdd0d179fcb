"""The store's errors: one base class and one subclass per way a store operation can fail.

Every error names the object (kind and name) it is about, so a log line is enough to find it.
Where a built-in fits, the error also subclasses it (``NotFound`` is a ``LookupError``,
``InvalidObject`` a ``ValueError``) so generic handlers keep working.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "Conflict",
    "Expired",
    "InvalidObject",
    "NotFound",
    "StoreClosed",
    "StoreError",
]


class StoreError(Exception):
    """Base class of every error raised by a store.

    Errors pickle with their fields (a store's writer may run in another process).
    """

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(
    cls: type[StoreError], args: tuple[object, ...], state: dict[str, object]
) -> StoreError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class NotFound(StoreError, LookupError):
    """Raised when the object asked for (or the owner named by a new object) does not exist."""

    def __init__(
        self, kind: str, name: str | None = None, *, uid: str | None = None, detail: str = ""
    ) -> None:
        self.kind = kind
        self.name = name
        self.uid = uid
        what = f'{kind} "{name}"' if name is not None else f'{kind or "object"} with uid "{uid}"'
        super().__init__(f"{what}: {detail}" if detail else f"{what} not found")


class AlreadyExists(StoreError):
    """Raised by a create when (kind, name), (kind, unique_key) or a kept uid is taken.

    ``field`` is ``"name"``, ``"unique_key"`` or ``"uid"``: the key that clashed.
    """

    def __init__(self, kind: str, name: str, *, field: str = "name", value: str = "") -> None:
        self.kind = kind
        self.name = name
        self.field = field
        if field == "name":
            message = f'{kind} "{name}" already exists'
        elif field == "uid":
            message = f'{kind} "{name}": another object already has uid "{value}"'
        else:
            message = f'{kind} "{name}": another {kind} already has unique_key "{value}"'
        super().__init__(message)


class Conflict(StoreError):
    """Raised when a compare-and-set write finds the object changed since it was read.

    ``actual`` is the stored resourceVersion and ``expected`` the one the write was based on.
    The caller re-reads the object and retries its decision on the fresh state.
    """

    def __init__(
        self, kind: str, name: str, *, actual: int, expected: int, detail: str = ""
    ) -> None:
        self.kind = kind
        self.name = name
        self.actual = actual
        self.expected = expected
        message = f'{kind} "{name}" has resourceVersion {actual}, write expected {expected}'
        super().__init__(f"{message}{detail}")


class Expired(StoreError):
    """Raised by a watch whose start revision is older than the compacted history.

    The watcher lost events it can never get back: it must list again and watch from the
    revision the list returns.
    """

    def __init__(self, from_revision: int, compacted_before: int) -> None:
        self.from_revision = from_revision
        self.compacted_before = compacted_before
        super().__init__(
            f"cannot watch from revision {from_revision}: history before revision "
            f"{compacted_before} was compacted; list again and watch from the list's revision"
        )


class InvalidObject(StoreError, ValueError):
    """Raised before anything is written when an object or argument is malformed.

    The message names the field and the problem, e.g. ``Job "": name: must not be empty``.
    """

    def __init__(self, kind: str, name: str, field: str, problem: str) -> None:
        self.kind = kind
        self.name = name
        self.field = field
        self.problem = problem
        super().__init__(f'{kind or "<no kind>"} "{name}": {field}: {problem}')


class StoreClosed(StoreError):
    """Raised when a store is used after :meth:`~cronloop.store.base.Store.close`."""

    def __init__(self) -> None:
        super().__init__("the store is closed")
