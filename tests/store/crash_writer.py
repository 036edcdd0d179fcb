"""A store writer for the crash test: writes forever and prints a line after each commit.

Run as ``python -m tests.store.crash_writer DB SEED``; the test kills it with SIGKILL at a
random moment and then checks the database. Each fan-out is one ``Job`` (spec: its size)
plus one ``create_many`` of that many ``SubJob``s labelled with the batch number; status
rounds are ``update_many`` over a whole batch; some jobs are deleted with their sub-jobs.
"""

from __future__ import annotations

import asyncio
import random
import sys
from dataclasses import replace

from cronloop.store import SQLiteStore, StoredObject


async def main(path: str, seed: int) -> None:
    rng = random.Random(seed)
    store = await SQLiteStore.open(path)
    owners: list[tuple[int, StoredObject]] = []
    batch = 0
    step = 0
    while True:
        roll = rng.random()
        if roll < 0.55 or not owners:
            size = rng.randint(1, 80)
            owner = await store.create(StoredObject("Job", f"job-{batch}", spec={"size": size}))
            await store.create_many(
                [
                    StoredObject(
                        "SubJob",
                        f"sub-{batch}-{i}",
                        spec={"shard": i, "pad": "x" * rng.randint(0, 200)},
                        labels={"batch": str(batch)},
                        owner_uid=owner.uid,
                        unique_key=f"{owner.uid}@{i}",
                    )
                    for i in range(size)
                ]
            )
            owners.append((batch, owner))
            batch += 1
        elif roll < 0.9:
            number, _ = rng.choice(owners)
            subs = (await store.list("SubJob", labels={"batch": str(number)})).items
            await store.update_many([replace(s, status={"round": step}) for s in subs], status=True)
        else:
            _, owner = owners.pop(rng.randrange(len(owners)))
            await store.delete("Job", owner.name)
        sys.stdout.write(f"{step}\n")
        sys.stdout.flush()
        step += 1


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
