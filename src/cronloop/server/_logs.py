"""The log endpoint: an attempt's log file as plain text, optionally followed as it grows.

The file of an attempt is named in its ``runtime.logPath`` (written by the Job controller when
it dispatches the attempt). A followed log is read every ``poll_interval`` seconds; when a read
finds nothing new, the attempt's phase is re-read, and once it is terminal the file is drained
one last time and the stream ends. Polling (rather than inotify) keeps this working on every
platform and on network file systems, at the cost of up to ``poll_interval`` of delay.

Without an attempt number a target shows its latest run: the last attempt, preceded by the
``prepare`` attempt before it when the last one runs the ``main`` step, so the output of both
steps shows; followed, it goes on with each attempt dispatched after it (the main step after
the prepare step, a retry) until the sub-job ends. Without a target every target's log is
shown, each line prefixed with ``[target] ``; followed logs of several targets are interleaved
line by line as they are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path

from fastapi import APIRouter, Query

from cronloop.api import Attempt, Job, StepName, SubJob
from cronloop.controllers.objects import typed
from cronloop.controllers.subjobs import get_subjob, list_subjobs
from cronloop.server._context import ServerContext
from cronloop.server._errors import ApiError
from cronloop.server._streaming import ClosingStream, merge
from cronloop.store import NotFound

__all__ = [
    "MAX_LINE_BYTES",
    "READ_CHUNK_BYTES",
    "latest_run",
    "log_path",
    "log_router",
    "prefix_lines",
]

logger = logging.getLogger(__name__)

#: Bytes read from a log file at a time.
READ_CHUNK_BYTES = 64 * 1024
#: A line longer than this is cut (and the rest shown as the next line) when prefixing.
MAX_LINE_BYTES = 64 * 1024


def _read_chunk(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read(READ_CHUNK_BYTES)
    except FileNotFoundError:  # not created yet: the attempt has not written anything
        return b""


def log_path(ctx: ServerContext, subjob: str, attempt: Attempt) -> Path | None:
    """The log file of ``attempt`` (``None`` when it has none); 403 outside ``ctx.log_dir``."""
    raw = attempt.runtime.get("logPath")
    if not isinstance(raw, str) or not raw:
        return None
    path = Path(raw).resolve()
    # The path comes from the store; refuse anything outside the log directory so a tampered
    # record cannot turn this endpoint into a file reader.
    if not path.is_relative_to(ctx.log_dir.resolve()):
        raise ApiError(403, f'SubJob "{subjob}": log path is outside the server\'s log directory')
    return path


def _find(sub: SubJob, number: int) -> Attempt | None:
    return next((a for a in sub.status.attempts if a.number == number), None)


def latest_run(attempts: Sequence[Attempt]) -> list[Attempt]:
    """The attempts of the latest run of a sub-job: the last attempt and, when it runs the
    ``main`` step, the last ``prepare`` attempt before it (what that main step ran after)."""
    if not attempts:
        return []
    last = attempts[-1]
    if last.step is StepName.MAIN:
        for earlier in reversed(attempts[:-1]):
            if earlier.step is StepName.PREPARE:
                return [earlier, last]
    return [last]


def _chosen(sub: SubJob, number: int | None) -> list[Attempt]:
    """Attempt ``number`` of ``sub`` (none if it has no such attempt), or its latest run."""
    if number is None:
        return latest_run(sub.status.attempts)
    found = _find(sub, number)
    return [] if found is None else [found]


def _numbers(sub: SubJob) -> str:
    return ", ".join(str(a.number) for a in sub.status.attempts) or "none yet"


async def prefix_lines(
    source: AsyncGenerator[bytes, None], prefix: bytes
) -> AsyncGenerator[bytes, None]:
    """``source``'s bytes cut into lines, each starting with ``prefix`` and ending in ``\\n``."""
    pending = b""
    try:
        async for chunk in source:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            while len(pending) > MAX_LINE_BYTES:
                lines.append(pending[:MAX_LINE_BYTES])
                pending = pending[MAX_LINE_BYTES:]
            if lines:
                yield b"".join(prefix + line + b"\n" for line in lines)
        if pending:
            yield prefix + pending + b"\n"
    finally:
        await source.aclose()


class _AttemptLog:
    """Reads one sub-job's log: attempt ``number``, or its latest run; following it if asked."""

    def __init__(self, ctx: ServerContext, subjob: str, number: int | None, follow: bool) -> None:
        self._ctx = ctx
        self._subjob = subjob
        self._number = number
        self._follow = follow

    async def _sub(self) -> SubJob | None:
        try:
            return typed(await get_subjob(self._ctx.store, self._subjob), SubJob)
        except NotFound:  # deleted with its job while we were reading
            return None

    def _path(self, attempt: Attempt) -> Path | None:
        try:
            return log_path(self._ctx, self._subjob, attempt)
        except ApiError:  # checked before the response started; a later attempt just ends
            logger.warning("SubJob %s: log path outside the log directory", self._subjob)
            return None

    async def _attempts(self) -> list[Attempt]:
        """The attempts to show; when following, waits for the first attempt to be dispatched."""
        while True:
            sub = await self._sub()
            if sub is None:
                return []
            chosen = _chosen(sub, self._number)
            if chosen or not self._follow or sub.status.phase.terminal:
                return chosen
            await asyncio.sleep(self._ctx.poll_interval)

    async def _next(self, after: int) -> Attempt | None:
        """The attempt dispatched after attempt ``after``; None once the sub-job ends (or goes)
        without one."""
        while True:
            sub = await self._sub()
            if sub is None:
                return None
            later = next((a for a in sub.status.attempts if a.number > after), None)
            if later is not None:
                return later
            if sub.status.phase.terminal:
                return None
            await asyncio.sleep(self._ctx.poll_interval)

    async def _over(self, number: int) -> bool:
        sub = await self._sub()
        if sub is None:
            return True
        attempt = _find(sub, number)
        return attempt is None or attempt.phase.terminal

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The log's bytes; with follow, until the attempt (or the latest run) is over."""
        attempts = await self._attempts()
        for attempt in attempts:
            async with contextlib.aclosing(self._read(attempt)) as chunks:
                async for chunk in chunks:
                    yield chunk
        if not (self._follow and self._number is None and attempts):
            return
        last = attempts[-1].number
        while (following := await self._next(last)) is not None:
            async with contextlib.aclosing(self._read(following)) as chunks:
                async for chunk in chunks:
                    yield chunk
            last = following.number

    async def _read(self, attempt: Attempt) -> AsyncGenerator[bytes, None]:
        """One attempt's bytes; with follow, until that attempt is terminal."""
        path = self._path(attempt)
        if path is None:
            return
        offset = 0
        while True:
            data = await asyncio.to_thread(_read_chunk, path, offset)
            if data:
                offset += len(data)
                yield data
                continue
            if not self._follow:
                return
            if await self._over(attempt.number):
                # Output written before the terminal status is on disk: drain it, then stop.
                while data := await asyncio.to_thread(_read_chunk, path, offset):
                    offset += len(data)
                    yield data
                return
            await asyncio.sleep(self._ctx.poll_interval)


def log_router(ctx: ServerContext) -> APIRouter:
    """The log route over ``ctx.store`` and ``ctx.log_dir``."""
    router = APIRouter()
    store = ctx.store

    @router.get("/apis/cronloop.dev/v1/jobs/{name}/logs")
    async def logs(
        name: str,
        target: str | None = Query(None, min_length=1),
        attempt: int | None = Query(None, ge=1),
        follow: bool = False,
    ) -> ClosingStream:
        """The log of a Job's target (every target without ``target``), as ``text/plain``."""
        job = typed(await store.get("Job", name), Job)
        subs = await _subjobs(ctx, job)
        if follow and not subs and not job.status.phase.terminal:
            # Created a moment ago: follow from the fan-out on (``run`` then ``logs -f``).
            return ClosingStream(
                _after_fan_out(ctx, job, target, attempt), media_type="text/plain; charset=utf-8"
            )
        if target is not None:
            chosen = [s for s in subs if s.spec.target == target]
            if not chosen:
                known = ", ".join(s.spec.target for s in subs) or "none yet"
                raise ApiError(404, f'Job "{name}" has no target {target!r} (targets: {known})')
            subs = chosen
        if attempt is not None:
            with_attempt = [s for s in subs if _find(s, attempt) is not None]
            if not with_attempt:
                raise ApiError(404, _no_attempt(name, subs, attempt))
            subs = with_attempt  # without a target, targets lacking that attempt are left out
        for sub in subs:
            for chosen_attempt in _chosen(sub, attempt):
                log_path(ctx, sub.metadata.name, chosen_attempt)  # 403 before streaming
        return ClosingStream(
            _body(ctx, subs, target, attempt, follow), media_type="text/plain; charset=utf-8"
        )

    return router


def _no_attempt(job: str, subs: Sequence[SubJob], attempt: int) -> str:
    """The 404 message for an attempt number that no chosen sub-job has."""
    if len(subs) == 1:
        sub = subs[0]
        return f'SubJob "{sub.metadata.name}" has no attempt {attempt} (attempts: {_numbers(sub)})'
    known = "; ".join(f"{s.spec.target}: {_numbers(s)}" for s in subs) or "none yet"
    return f'Job "{job}" has no attempt {attempt} (attempts: {known})'


async def _subjobs(ctx: ServerContext, job: Job) -> list[SubJob]:
    objs = (await list_subjobs(ctx.store, owner_uid=job.metadata.uid)).items
    return [typed(obj, SubJob) for obj in objs]


def _body(
    ctx: ServerContext, subs: list[SubJob], target: str | None, attempt: int | None, follow: bool
) -> AsyncGenerator[bytes, None]:
    if target is not None:
        chosen = [s for s in subs if s.spec.target == target]
        if not chosen:
            return _concat([])
        return _AttemptLog(ctx, chosen[0].metadata.name, attempt, follow).chunks()
    prefixed = [
        prefix_lines(
            _AttemptLog(ctx, s.metadata.name, attempt, follow).chunks(),
            f"[{s.spec.target}] ".encode(),
        )
        for s in subs
    ]
    return merge(prefixed) if follow else _concat(prefixed)


async def _after_fan_out(
    ctx: ServerContext, job: Job, target: str | None, attempt: int | None
) -> AsyncGenerator[bytes, None]:
    """Wait until ``job`` has its sub-jobs (or ends, or goes), then follow them."""
    while not (subs := await _subjobs(ctx, job)):
        try:
            current = typed(await ctx.store.get("Job", job.metadata.name), Job)
        except NotFound:
            return
        if current.metadata.uid != job.metadata.uid or current.status.phase.terminal:
            return
        await asyncio.sleep(ctx.poll_interval)
    body = _body(ctx, subs, target, attempt, follow=True)
    try:
        async for chunk in body:
            yield chunk
    finally:
        await body.aclose()


async def _concat(sources: list[AsyncGenerator[bytes, None]]) -> AsyncGenerator[bytes, None]:
    try:
        for source in sources:
            async for chunk in source:
                yield chunk
    finally:
        for source in sources:
            await source.aclose()
