"""Measure each kernel of a profile on a backend: occupancy, wave count, µs per wave.

Prints the measured ``blocks_per_sm`` and ``block_us`` (the duration of one full wave,
i.e. of one resident block at full occupancy) so a profile's simulated cost model can be
set from the real GPU. Timing: the backend's own per-launch start/end (the cuda backend
uses %globaltimer written by the kernel), after warm-up; medians and p99 over --reps.

    python3 benchmarks/calibrate_kernels.py --profile default --backend cuda --out calib.json
    python3 benchmarks/calibrate_kernels.py --backend sim --reps 5   # the sim's own model
"""

from __future__ import annotations

import argparse
import statistics
import sys

from harness import write_result

from hbtui.engine.backends import make_backend
from hbtui.engine.model import LP, Launch
from hbtui.engine.profile import load, resolve


def _time(be, kernel, blocks: int, reps: int, stream: int = 1) -> list[float]:  # noqa: ANN001
    out = []
    for i in range(reps):
        x = Launch(i, "calib", LP, kernel, 0, blocks, stream)
        be.submit(x)
        while not be.wait(be.now_ns() + 1_000_000_000):
            pass
        out.append((x.end_ns - x.start_ns) / 1e3)
    return out


def _stats(v: list[float]) -> dict[str, float]:
    s = sorted(v)
    return {"p50": statistics.median(s), "p99": s[min(len(s) - 1, int(0.99 * len(s)))]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--backend", default="cuda", choices=["sim", "cuda"])
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--out", default=None)
    ap.add_argument("--stream", type=int, default=1, help="0 = the HP (greatest-priority) stream")
    ap.add_argument(
        "--sequence", action="store_true",
        help="also time the first hp task's kernels launched in order, back to back",
    )  # fmt: skip
    a = ap.parse_args(argv)
    prof = load(resolve(a.profile))
    be = make_backend(a.backend, prof.sim, prof.device)
    rows = {}
    for k in prof.kernels.values():
        bps = be.prepare(k)
        wave = be.sms * bps
        waves = -(-k.total_blocks // wave)
        _time(be, k, k.total_blocks, 5)  # warm-up (also the first-launch module load)
        whole = _stats(_time(be, k, k.total_blocks, a.reps, a.stream))
        one = _stats(_time(be, k, min(wave, k.total_blocks), a.reps, a.stream))
        rows[k.name] = {
            "builtin": k.builtin,
            "params": k.params,
            "grid_blocks": k.total_blocks,
            "blocks_per_sm": bps,
            "wave_blocks": wave,
            "waves": waves,
            "whole_us": whole,
            "one_wave_us": one,
            "profile_block_us": k.block_us,
            "profile_blocks_per_sm": k.blocks_per_sm,
        }
        print(
            f"{k.name:<10} {k.builtin or 'spin':<7} blocks {k.total_blocks:>6} bps {bps} "
            f"waves {waves:>3}  whole p50 {whole['p50']:8.1f} µs  one wave p50 "
            f"{one['p50']:7.1f} µs (profile block_us {k.block_us})",
            flush=True,
        )
    out = {"backend": a.backend, "device": be.device, "profile": prof.name, "kernels": rows}
    hp = next((t for t in prof.tasks if t.cls == "hp"), None)
    if a.sequence and hp is not None:
        # Same kernels in request order: caches no longer hold the previous launch's data.
        seq: dict[str, list[float]] = {}
        for _ in range(a.reps):
            for st in hp.steps:
                k = prof.kernels[st.kernel]
                seq.setdefault(st.kernel, []).extend(_time(be, k, k.total_blocks, 1, a.stream))
        out["sequence_us"] = {n: _stats(v) for n, v in seq.items()}
        print("in sequence:", {n: round(v["p50"], 1) for n, v in out["sequence_us"].items()})
    be.close()
    if a.out:
        write_result(a.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
