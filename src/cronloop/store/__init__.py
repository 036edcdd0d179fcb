"""TODO: filled in by its layer."""
