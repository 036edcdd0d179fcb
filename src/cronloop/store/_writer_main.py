"""``python -m cronloop.store._writer_main``: the store's writer process (see
:mod:`cronloop.store._writer_process`). A module of its own, which the package does not
import, so that running it as ``__main__`` does not import it twice."""

from __future__ import annotations

from cronloop.store._writer_process import main

if __name__ == "__main__":
    main()
