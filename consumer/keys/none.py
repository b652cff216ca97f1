"""The `none` key strategy: no key at all."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["no_key"]


def no_key(event: Mapping[str, Any]) -> None:
    return None
