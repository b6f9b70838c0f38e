"""Command-line front ends of engine features (``hbtui bench``)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from hbtui.engine.atomic import write_atomic
from hbtui.engine.backends import BackendError
from hbtui.engine.policies import POLICIES
from hbtui.engine.profile import ProfileError, load, resolve


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2 (argparse's own convention)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _number(v: str, allow_zero: bool) -> float:
    try:
        f = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {v!r}") from None
    if not math.isfinite(f) or f < 0 or (f == 0 and not allow_zero):
        raise argparse.ArgumentTypeError(
            f"must be a finite number {'>=' if allow_zero else '>'} 0, got {v!r}"
        )
    return f


def _positive(v: str) -> float:
    return _number(v, allow_zero=False)


def _non_negative(v: str) -> float:
    return _number(v, allow_zero=True)


def _jobs(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {v!r}") from None
    if not 1 <= n <= 64:
        raise argparse.ArgumentTypeError(f"must be 1..64, got {v!r}")
    return n


def _device(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a device index: {v!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v!r}")
    return n


def _policies(v: str) -> list[str]:
    names = [p.strip() for p in v.split(",") if p.strip()]
    bad = [p for p in names if p not in POLICIES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown policy {', '.join(map(repr, bad)) or '(none)'}; choose from "
            f"{', '.join(POLICIES)}"
        )
    return names


def write_json_atomic(path: str, data: object) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def bench_main(argv: list[str]) -> int:
    ap = _Parser(prog="hbtui bench", description="Compare scheduling policies on one profile.")
    ap.add_argument("--profile", default="default", help="profile path or name (default)")
    ap.add_argument("--backend", default="sim", choices=["auto", "sim", "cuda"])
    ap.add_argument("--policies", type=_policies, default=list(POLICIES))
    ap.add_argument("--duration", type=_positive, default=10.0, help="seconds per policy")
    ap.add_argument("--warmup", type=_non_negative, default=None, help="seconds discarded per run")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument(
        "--device", type=_device, default=None, help="CUDA device index (default: the profile's)"
    )
    ap.add_argument(
        "--slice-us", type=_positive, default=None, help="override every LP task's slice cap"
    )
    ap.add_argument(
        "--hp-issue",
        choices=["auto", "native", "python"],
        default=None,
        help="cuda: who issues HP kernels (default auto: the native thread when it builds; "
        "same as $HBTUI_HP_ISSUE)",
    )
    ap.add_argument("--json", dest="json_out", default=None, help="write results here")
    ap.add_argument("--quiet", action="store_true", help="no progress on stderr")
    ap.add_argument(
        "--jobs",
        type=_jobs,
        default=min(3, os.cpu_count() or 1),
        help="worker processes for independent sim runs (default: up to 3 CPUs)",
    )
    a = ap.parse_args(argv)
    if a.hp_issue:
        os.environ["HBTUI_HP_ISSUE"] = a.hp_issue  # read by the cuda backend of every run
    from hbtui.engine.bench import bench, format_table, stderr_progress

    try:
        prof = load(resolve(a.profile))
        if a.device is not None:
            prof.device = a.device
        if a.slice_us is not None:
            for t in prof.tasks:
                if t.cls == "lp":
                    t.slice_us, t.slice_blocks = a.slice_us, None
        result = bench(
            prof,
            a.policies,
            a.duration,
            seed=a.seed,
            backend=a.backend,
            progress=None if a.quiet else stderr_progress,
            warmup_s=a.warmup,
            jobs=a.jobs,
        )
    except (ProfileError, BackendError, ValueError) as e:
        sys.stderr.write(f"hbtui bench: error: {e}\n")
        return 2
    print(format_table(result))
    if a.json_out:
        try:
            write_json_atomic(a.json_out, result)
        except OSError as e:
            sys.stderr.write(f"hbtui bench: error: cannot write {a.json_out}: {e.strerror}\n")
            return 2
    return 0
