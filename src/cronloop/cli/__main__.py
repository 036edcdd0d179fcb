"""``python -m cronloop.cli``: the same as the ``cronloop`` command."""

from cronloop.cli.main import app

app()
