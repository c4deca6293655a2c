"""`python -m workers.cli` is `pitrdrill`."""

from workers.cli import entry_point

entry_point()
