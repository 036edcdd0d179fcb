"""The ``cronloop`` command line (Typer + Rich)."""
