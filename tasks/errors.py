"""Errors a command reports before its run starts, for the flows layer (which does not import storage)."""

from __future__ import annotations

from storage.errors import DatasetNotFoundError, InputError

__all__ = ["DatasetNotFoundError", "InputError"]
