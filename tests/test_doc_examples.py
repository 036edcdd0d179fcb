"""Every Python example in the sync layer's docs runs as written.

Each fenced ``python`` block of docs/sync/*.md is a complete program; it runs in a fresh
interpreter and must exit 0 (the examples assert what they claim).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs" / "sync"
BLOCKS = [
    pytest.param(block, id=f"{path.stem}-{index}")
    for path in sorted(DOCS.glob("*.md"))
    for index, block in enumerate(re.findall(r"```python\n(.*?)```", path.read_text(), re.S))
]


def test_there_are_examples() -> None:
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize("block", BLOCKS)
def test_example_runs(block: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", block], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
