"""Typed errors sent to clients as ``sfu-error`` (stable ids, docs/SFU.md lists them)."""

from __future__ import annotations


class SfuError(Exception):
    def __init__(self, id: str, message: str) -> None:
        super().__init__(message)
        self.id = id
        self.message = message
