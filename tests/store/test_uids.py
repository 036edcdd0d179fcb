"""Uids the store assigns: valid time-ordered (version 7) UUID strings, unique even when the
global RNG is seeded."""

from __future__ import annotations

import os
import random
import time
import uuid

from cronloop.store import new_uid


def test_uids_are_version_7_uuids() -> None:
    for _ in range(1_000):
        text = new_uid()
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (7, uuid.RFC_4122, text)


def test_uids_start_with_their_creation_time_in_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    uids = [new_uid() for _ in range(1_000)]
    after = time.time_ns() // 1_000_000
    stamps = [uuid.UUID(text).int >> 80 for text in uids]
    assert before <= stamps[0]
    assert stamps[-1] <= after
    # Ordered by time, so new keys go to the end of an index; unique within a millisecond.
    assert stamps == sorted(stamps)
    assert len(set(uids)) == len(uids)


def test_seeding_the_global_random_does_not_repeat_uids() -> None:
    random.seed(7)
    first = new_uid()
    random.seed(7)
    assert new_uid() != first


def test_a_forked_child_draws_other_uids() -> None:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write_fd, new_uid().encode())
        os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    with os.fdopen(read_fd, "rb") as pipe:
        child = pipe.read().decode()
    assert child != new_uid()
    uuid.UUID(child)
