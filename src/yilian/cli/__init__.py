"""The ``yilian`` command."""
