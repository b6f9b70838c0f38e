"""UI preferences remembered between runs: ``$XDG_CONFIG_HOME/hbtui/console.toml``.

Refresh rate, theme and table sort. Written atomically (a temp file in the same
directory, fsync, rename), so a crash never leaves half a file. A malformed file is
reported once (``Prefs.problem``, shown as a toast) and ignored; it is overwritten
only when the operator changes a preference.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from hbtui.console.limits import RATE_HZ_MAX, RATE_HZ_MIN
from hbtui.console.paths import prefs_path


@dataclass
class Prefs:
    rate_hz: float = 10.0
    theme: str = ""
    sort_column: str = ""
    sort_reverse: bool = False
    path: Path | None = None
    problem: str = ""  # why the file was ignored, shown once
    _saved: dict[str, Any] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"rate_hz": self.rate_hz, "sort_reverse": self.sort_reverse}
        if self.theme:
            d["theme"] = self.theme
        if self.sort_column:
            d["sort_column"] = self.sort_column
        return d

    @classmethod
    def load(cls, path: Path | None = None) -> Prefs:
        path = path or prefs_path()
        p = cls(path=path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return p
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            p.problem = f"ignored {path}: {' '.join(str(e).split())}"
            return p
        bad = []
        rate = data.get("rate_hz", p.rate_hz)
        if isinstance(rate, int | float) and not isinstance(rate, bool):
            if RATE_HZ_MIN <= rate <= RATE_HZ_MAX:
                p.rate_hz = float(rate)
            else:
                bad.append("rate_hz")
        else:
            bad.append("rate_hz")
        for key, typ in (("theme", str), ("sort_column", str), ("sort_reverse", bool)):
            if key in data:
                if isinstance(data[key], typ):
                    setattr(p, key, data[key])
                else:
                    bad.append(key)
        if bad:
            p.problem = f"ignored bad {', '.join(bad)} in {path}"
        p._saved = p.as_dict()
        return p

    def save(self) -> None:
        """Write the file if anything changed (atomic). Raises OSError."""
        d = self.as_dict()
        if d == self._saved or self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".console.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                tomli_w.dump(d, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._saved = d
