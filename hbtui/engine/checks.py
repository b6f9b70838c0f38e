"""Typed getters for configuration tables (profiles, task tables of control ops): each
raises ``ProfileError`` naming the file (or op) and the key path, never a traceback."""

from __future__ import annotations

import math
from typing import Any


class ProfileError(ValueError):
    """A profile problem, already formatted as ``file: key.path: what is wrong``."""


class Checker:
    """Typed getters that raise ProfileError naming file and key path."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, path: str, msg: str) -> ProfileError:
        return ProfileError(f"{self.file}: {path}: {msg}")

    def table(self, d: Any, path: str) -> dict[str, Any]:
        if not isinstance(d, dict):
            raise self.fail(path, "must be a table")
        return d

    def keys(self, d: dict[str, Any], path: str, allowed: set[str]) -> None:
        for k in d:
            if k not in allowed:
                raise self.fail(f"{path}.{k}" if path else k, "unknown key")

    def num(
        self,
        d: dict[str, Any],
        key: str,
        path: str,
        default: Any = None,
        *,
        positive: bool = False,
        minimum: float | None = None,
        integer: bool = False,
    ) -> Any:
        p = f"{path}.{key}" if path else key
        if key not in d:
            if default is ...:
                raise self.fail(p, "is required")
            return default
        v = d[key]
        if (
            isinstance(v, bool)
            or not isinstance(v, int | float)
            or (integer and not isinstance(v, int))
        ):
            raise self.fail(p, f"must be {'an integer' if integer else 'a number'}, got {v!r}")
        if not math.isfinite(v):
            raise self.fail(p, f"must be finite, got {v!r}")
        if positive and v <= 0:
            raise self.fail(p, f"must be > 0, got {v!r}")
        if minimum is not None and v < minimum:
            raise self.fail(p, f"must be >= {minimum}, got {v!r}")
        return v

    def str_(
        self,
        d: dict[str, Any],
        key: str,
        path: str,
        default: Any = None,
        choices: tuple[str, ...] | None = None,
    ) -> Any:
        p = f"{path}.{key}" if path else key
        if key not in d:
            if default is ...:
                raise self.fail(p, "is required")
            return default
        v = d[key]
        if not isinstance(v, str) or not v:
            raise self.fail(p, f"must be a non-empty string, got {v!r}")
        if choices and v not in choices:
            raise self.fail(p, f"must be one of {', '.join(choices)}; got {v!r}")
        return v

    def dims(self, d: dict[str, Any], key: str, path: str, default: Any) -> tuple[int, int, int]:
        p = f"{path}.{key}"
        v = d.get(key, default)
        if v is ...:
            raise self.fail(p, "is required")
        if isinstance(v, int) and not isinstance(v, bool):
            v = [v]
        if (
            not isinstance(v, list)
            or not 1 <= len(v) <= 3
            or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)
        ):
            raise self.fail(p, f"must be a positive integer or a list of 1-3 of them, got {v!r}")
        v = list(v) + [1] * (3 - len(v))
        return (v[0], v[1], v[2])
