"""The store_writes benchmark still runs against the current schema (no timing is checked)."""

from __future__ import annotations

from pathlib import Path

from bench.store_writes import _one_run


async def test_one_small_run_measures_every_row(tmp_path: Path) -> None:
    # The baseline writes the store's rows by hand on the store's own schema, so a schema
    # change (events written by triggers, say) breaks it: this runs it small to find out.
    result = await _one_run(tmp_path, 0, batch=20, singles=5)
    expected = {
        f"{who}_{what}"
        for who in ("store", "raw")
        for what in ("batch", "single", "cas", "cas_concurrent", "cas_batch")
    }
    assert expected <= set(result)
    assert all(value > 0 for value in result.values())
