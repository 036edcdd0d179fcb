"""The log endpoint: an attempt's log file as plain text, optionally followed as it grows.

The file of an attempt is named in its ``runtime.logPath`` (written by the Job controller when
it dispatches the attempt). A followed log is read every ``poll_interval`` seconds; when a read
finds nothing new, the attempt's phase is re-read, and once it is terminal the file is drained
one last time and the stream ends. Polling (rather than inotify) keeps this working on every
platform and on network file systems, at the cost of up to ``poll_interval`` of delay.

Without a target every target's log is shown, each line prefixed with ``[target] ``; followed
logs of several targets are interleaved line by line as they are written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from pathlib import Path

from fastapi import APIRouter, Query

from cronloop.api import Attempt, Job, SubJob
from cronloop.controllers.objects import typed
from cronloop.server._context import ServerContext
from cronloop.server._errors import ApiError
from cronloop.server._streaming import ClosingStream, merge
from cronloop.store import NotFound

__all__ = ["MAX_LINE_BYTES", "READ_CHUNK_BYTES", "log_path", "log_router", "prefix_lines"]

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


def _pick(sub: SubJob, number: int | None) -> Attempt | None:
    attempts = sub.status.attempts
    if number is None:
        return attempts[-1] if attempts else None
    return next((a for a in attempts if a.number == number), None)


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
    """Reads one sub-job's attempt log, following it if asked."""

    def __init__(self, ctx: ServerContext, subjob: str, number: int | None, follow: bool) -> None:
        self._ctx = ctx
        self._subjob = subjob
        self._number = number
        self._follow = follow

    async def _sub(self) -> SubJob | None:
        try:
            return typed(await self._ctx.store.get("SubJob", self._subjob), SubJob)
        except NotFound:  # deleted with its job while we were reading
            return None

    def _path(self, attempt: Attempt) -> Path | None:
        try:
            return log_path(self._ctx, self._subjob, attempt)
        except ApiError:  # checked before the response started; a later attempt just ends
            logger.warning("SubJob %s: log path outside the log directory", self._subjob)
            return None

    async def _attempt(self) -> Attempt | None:
        """The attempt to show; when following, waits for the first attempt to be dispatched."""
        while True:
            sub = await self._sub()
            if sub is None:
                return None
            attempt = _pick(sub, self._number)
            if attempt is not None or not self._follow or sub.status.phase.terminal:
                return attempt
            await asyncio.sleep(self._ctx.poll_interval)

    async def _over(self, number: int) -> bool:
        sub = await self._sub()
        if sub is None:
            return True
        attempt = _pick(sub, number)
        return attempt is None or attempt.phase.terminal

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The log's bytes; with follow, until the attempt is terminal."""
        attempt = await self._attempt()
        if attempt is None:
            return
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
            with_attempt = [s for s in subs if _pick(s, attempt) is not None]
            if target is not None and not with_attempt:
                sub = subs[0]
                numbers = ", ".join(str(a.number) for a in sub.status.attempts) or "none yet"
                raise ApiError(
                    404,
                    f'SubJob "{sub.metadata.name}" has no attempt {attempt} (attempts: {numbers})',
                )
            subs = with_attempt  # without a target, targets lacking that attempt are left out
        for sub in subs:
            chosen_attempt = _pick(sub, attempt)
            if chosen_attempt is not None:
                log_path(ctx, sub.metadata.name, chosen_attempt)  # 403 before streaming
        return ClosingStream(
            _body(ctx, subs, target, attempt, follow), media_type="text/plain; charset=utf-8"
        )

    return router


async def _subjobs(ctx: ServerContext, job: Job) -> list[SubJob]:
    objs = (await ctx.store.list("SubJob", owner_uid=job.metadata.uid)).items
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
