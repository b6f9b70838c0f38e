"""Sliced execution is indistinguishable from the original (issue 16, item 3): a
torch.compile'd GPT-2 training step (transformers, random weights; Inductor with Triton
GEMM templates, so most GPU time is in Triton kernels) run for ``--steps`` steps with
torch's deterministic settings, twice as a plain process and twice under
``hbtui run --lp`` with a ``hummingbird`` engine (slicing on); the per-step loss bits and
the output, gradient and final parameter fingerprints (benchmarks/apps/lp_train.py,
``--check-steps``) must be identical. The first ``hbtui`` run slices the program's
modules (the engine's background slicer), the second reads them from the cache; each
run's first-step time (compile, driver JIT of the sliced PTX included) and each engine's
slicer figures (modules sliced and its seconds on them, modules read from the disk cache:
each ``hbtui`` run has an engine of its own) are reported, and
the engine's summary lists every sliced kernel with its launches and slices.

    python3 benchmarks/slicing_check.py --out gpt2-slicing-check.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness  # puts the repository root on sys.path
from harness import log

HERE = Path(__file__).resolve().parent
LP_APP = HERE / "apps" / "lp_train.py"


def run(cmd: list[str], out: Path, env: dict[str, str], timeout: float) -> dict[str, Any]:
    t0 = time.monotonic()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - t0
    try:  # a result written before a later failure is kept (and the failure with it)
        doc = json.loads(out.read_text())
    except (OSError, ValueError):
        doc = None
    if r.returncode != 0 or doc is None:
        err = {"error": f"exit {r.returncode}", "stderr": r.stderr[-4000:], "wall_s": wall}
        return {**(doc or {}), **err}
    doc["wall_s"] = round(wall, 1)
    doc["stderr_tail"] = r.stderr[-1500:]
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--timeout", type=float, default=420.0, help="per run")
    ap.add_argument("--plain-runs", type=int, default=2)
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="hbcheck-"))
    env = {"TRITON_CACHE_DIR": str(tmp / "triton"),  # (kept when set: shared caches)
           "TORCHINDUCTOR_CACHE_DIR": str(tmp / "inductor"),
           **os.environ, "HBTUI_MODULE_DIR": str(tmp / "modules")}  # fmt: skip
    app = [sys.executable, str(LP_APP), "--model", "gpt2", "--compile", "max-autotune-triton",
           "--deterministic", "--amp", "bf16", "--layers", str(a.layers), "--batch",
           str(a.batch), "--seq", str(a.seq), "--check-steps", str(a.steps)]  # fmt: skip
    doc: dict[str, Any] = {
        "what": "GPT-2 (torch.compile max-autotune, Triton GEMMs) training steps: plain vs "
                "sliced under hbtui run --lp (hummingbird), bitwise",
        "commit": harness.git_commit()["commit"],
        "date": datetime.date.today().isoformat(), "machine": harness.machine(),
        "command": harness.command(argv), "app": app[1:], "runs": {},
    }  # fmt: skip
    outp = Path(a.out)

    def save() -> None:
        outp.write_text(json.dumps(doc, indent=1) + "\n")

    for i in range(a.plain_runs):
        name = f"plain-{i + 1}"
        log(f"{name} ...")
        doc["runs"][name] = run([*app, "--out", str(tmp / f"{name}.json")], tmp / f"{name}.json",
                                env, a.timeout)  # fmt: skip
        log(f"{name}: {doc['runs'][name].get('wall_s')} s {doc['runs'][name].get('error', '')}")
        save()
    doc["engine_departed"], doc["slicer"] = {}, {}
    for i in range(2):  # an engine each: the second reads the sliced modules from the disk
        name = f"hbtui-{i + 1}"
        eng = harness.HeadlessEngine("programs", "sim", calibrate=0).start()
        try:
            eng.wait_running(60)
            eng.hold_hp()  # (with no HP attached LP would run ungated and whole)
            log(f"{name} ...")
            cmd = [sys.executable, "-m", "hbtui", "run", "--lp", "--task", f"train{i + 1}",
                   "--engine", eng.ctl, "--attach-timeout", "10", "--", *app, "--out",
                   str(tmp / f"{name}.json")]  # fmt: skip
            doc["runs"][name] = run(cmd, tmp / f"{name}.json", env, a.timeout)
            log(f"{name}: {doc['runs'][name].get('wall_s')} s {doc['runs'][name].get('error', '')}")
            time.sleep(1.0)
            eng.stop()
            try:
                summary = eng.summary() or {}
                doc["engine_departed"].update(summary.get("attached_departed") or {})
                doc["slicer"][name] = summary.get("slicer")
            except ValueError as e:
                doc["engine_departed"][name] = {"error": str(e)}
            doc["engine_log_tail"] = eng.stderr[-4000:]
        finally:
            eng.close()
        save()
    mods = tmp / "modules"
    doc["module_cache"] = {
        "sliced_ptx": len(list(mods.glob("*.sliced.ptx"))) if mods.is_dir() else 0,
        "json": len(list(mods.glob("*.json"))) if mods.is_dir() else 0,
    }
    runs = doc["runs"]
    keys = ("check_steps", "params")

    def sig(r: dict[str, Any]) -> Any:
        if "check_steps" not in r:
            return None
        return [[s["loss"], s["output"], s["grads"]] for s in r["check_steps"]], r["params"]

    sigs = {k: sig(v) for k, v in runs.items()}
    ref = sigs.get("plain-1")
    doc["identical"] = {k: (v is not None and v == ref) for k, v in sigs.items()}
    doc["first_step_s"] = {k: (v.get("check_steps") or [{}])[0].get("s") for k, v in runs.items()}
    doc["compared"] = list(keys)
    save()
    print(json.dumps({"identical": doc["identical"], "first_step_s": doc["first_step_s"],
                      "module_cache": doc["module_cache"], "slicer": doc["slicer"]},
                     indent=1))  # fmt: skip
    dep = doc.get("engine_departed") or {}
    for t, d in dep.items() if isinstance(dep, dict) else []:
        ks = (d or {}).get("sliced_kernels") or {}
        tot = sum(v["slices"] for v in ks.values())
        att = (d or {}).get("attached") or {}
        share, able = att.get("sliced_share"), att.get("sliceable_share")
        print(f"{t}: {len(ks)} sliced kernels, {tot} slices, sliced_share {share}, "
              f"sliceable_share {able}")  # fmt: skip
    return 0 if all(doc["identical"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
