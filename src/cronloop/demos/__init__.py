"""Runnable demonstrations of cronloop's building blocks (used by ``cronloop demo``)."""
