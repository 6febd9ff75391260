"""Subcommands of the ``asyncnet`` CLI, one module each (discovered automatically)."""
