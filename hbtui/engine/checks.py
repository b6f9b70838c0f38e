"""Typed getters for configuration tables (profiles, task tables of control ops): each
raises ``ProfileError`` naming the file (or op) and the key path, never a traceback.

A ``Checker`` made with ``echo=False`` (profiles loaded over the control socket) never
puts a value or an unknown key from the file into its messages: it names the key path
and the expected type or range only, so an error reply cannot carry file contents.
"""

from __future__ import annotations

import math
from typing import Any

from hbtui.engine.limits import MAX_NAME, NAME_RE, RANGES, Range


class ProfileError(ValueError):
    """A profile problem, already formatted as ``file: key.path: what is wrong``."""


class Checker:
    """Typed getters that raise ProfileError naming file and key path."""

    def __init__(self, file: str, echo: bool = True) -> None:
        self.file = file
        self.echo = echo

    def fail(self, path: str, msg: str) -> ProfileError:
        return ProfileError(f"{self.file}: {path}: {msg}")

    def show(self, v: Any) -> str:
        """``v`` for a message: its repr (shortened), or only its type when not echoing."""
        if not self.echo:
            return f"a {type(v).__name__}"
        s = repr(v)
        return s if len(s) <= 40 else s[:37] + "..."

    def table(self, d: Any, path: str) -> dict[str, Any]:
        if not isinstance(d, dict):
            raise self.fail(path, "must be a table")
        return d

    def keys(self, d: dict[str, Any], path: str, allowed: set[str]) -> None:
        for k in d:
            if k not in allowed:
                if not self.echo:  # the key itself is file content
                    where = path or "(top level)"
                    raise self.fail(where, f"unknown key (allowed: {', '.join(sorted(allowed))})")
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
        rng: Range | str | None = None,
    ) -> Any:
        """A number; ``rng`` (a Range or a key of limits.RANGES) bounds it both ways."""
        p = f"{path}.{key}" if path else key
        if key not in d:
            if default is ...:
                raise self.fail(p, "is required")
            return default
        v = d[key]
        r = RANGES[rng] if isinstance(rng, str) else rng
        integer = integer or (r is not None and r.integer)
        if (
            isinstance(v, bool)
            or not isinstance(v, int | float)
            or (integer and not isinstance(v, int))
        ):
            what = "an integer" if integer else "a number"
            raise self.fail(p, f"must be {what}, got {self.show(v)}")
        if not math.isfinite(v):
            raise self.fail(p, f"must be finite, got {self.show(v)}")
        if positive and v <= 0:
            raise self.fail(p, f"must be > 0, got {self.show(v)}")
        if minimum is not None and v < minimum:
            raise self.fail(p, f"must be >= {minimum}, got {self.show(v)}")
        if r is not None and (why := r.problem(v)) is not None:
            raise self.fail(p, f"must be {why} (range {r.span()}), got {self.show(v)}")
        return v

    def str_(
        self,
        d: dict[str, Any],
        key: str,
        path: str,
        default: Any = None,
        choices: tuple[str, ...] | None = None,
        max_len: int = 4096,
    ) -> Any:
        p = f"{path}.{key}" if path else key
        if key not in d:
            if default is ...:
                raise self.fail(p, "is required")
            return default
        v = d[key]
        if not isinstance(v, str) or not v:
            raise self.fail(p, f"must be a non-empty string, got {self.show(v)}")
        if choices and v not in choices:
            raise self.fail(p, f"must be one of {', '.join(choices)}; got {self.show(v)}")
        if len(v) > max_len:
            raise self.fail(p, f"must be at most {max_len} characters, got {len(v)}")
        return v

    def name(self, d: dict[str, Any], key: str, path: str, default: Any = None) -> Any:
        """A name that reaches telemetry: 1-64 of ``A-Z a-z 0-9 _ . -``."""
        v = self.str_(d, key, path, default, max_len=MAX_NAME)
        if v is not None and v is not default and not NAME_RE.match(v):
            raise self.fail(f"{path}.{key}" if path else key, self.name_rule(v))
        return v

    def name_rule(self, v: str) -> str:
        return f"must be 1-{MAX_NAME} of A-Z a-z 0-9 _ . -, got {self.show(v)}"

    def dims(
        self, d: dict[str, Any], key: str, path: str, default: Any, kind: str = "grid"
    ) -> tuple[int, int, int]:
        """1-3 positive integers (grid: x <= 2**31-1, y, z <= 65535, product <= 2**31;
        block: product <= 1024)."""
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
            raise self.fail(
                p, f"must be a positive integer or a list of 1-3 of them, got {self.show(v)}"
            )
        v = list(v) + [1] * (3 - len(v))
        if kind == "grid":
            rngs = (RANGES["grid_x"], RANGES["grid_yz"], RANGES["grid_yz"])
            total = RANGES["total_blocks"]
        else:
            rngs = (RANGES["block_dim"],) * 3
            total = RANGES["block_dim"]
        for x, r in zip(v, rngs, strict=True):
            if r.problem(x) is not None:
                raise self.fail(p, f"each dimension must be in {r.span()}, got {self.show(v)}")
        if total.problem(v[0] * v[1] * v[2]) is not None:
            raise self.fail(p, f"x*y*z must be in {total.span()}, got {v[0] * v[1] * v[2]}")
        return (v[0], v[1], v[2])
