"""Smoke test of ``hbtui run`` on a GPU: a synthetic PyTorch HP service and LP loop, alone,
as plain processes, and under an engine with ``temporal`` and ``hummingbird``.

    python3 benchmarks/attach_smoke.py          # writes $OUT/smoke.json (default /tmp/out)

HP: 8 bf16 2048x2048 matmul+relu per request, one request every 20 ms, synchronised.
LP: bf16 4096x4096 matmul+relu, synchronised every 10. Windows of 8 s. The full
benchmark with real models is benchmarks/real_programs.py."""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

PY = sys.executable
HP = r"""
import sys, time, torch, json
torch.manual_seed(0)
x = torch.randn(2048, 2048, device="cuda", dtype=torch.bfloat16)
w = torch.randn(2048, 2048, device="cuda", dtype=torch.bfloat16)
for _ in range(20): y = x @ w
torch.cuda.synchronize()
lat = []
t_end = time.monotonic() + float(sys.argv[1])
nxt = time.monotonic()
while time.monotonic() < t_end:
    nxt += 0.02
    while time.monotonic() < nxt: pass
    t0 = time.monotonic()
    for _ in range(8): y = torch.relu(x @ w)
    torch.cuda.synchronize()
    lat.append((time.monotonic() - t0) * 1e3)
lat.sort()
res = {"n": len(lat), "p50": lat[len(lat) // 2], "p99": lat[int(len(lat) * 0.99)]}
print(json.dumps(res), flush=True)
"""
LP = r"""
import sys, time, torch, json
a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
b = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
for _ in range(10): c = a @ b
torch.cuda.synchronize()
n = 0; t0 = time.monotonic(); t_end = t0 + float(sys.argv[1])
while time.monotonic() < t_end:
    for _ in range(10): c = torch.relu(a @ b)
    torch.cuda.synchronize(); n += 10
print(json.dumps({"it_s": n / (time.monotonic() - t0)}), flush=True)
"""


def run(cmd, **kw):
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def out(p, t=120):
    o, e = p.communicate(timeout=t)
    if p.returncode:
        print("FAILED", p.args[:6], e[-2000:], flush=True)
    lines = [ln for ln in o.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {"err": e[-500:]}


def main() -> None:
    ap = argparse.ArgumentParser(description="hbtui run smoke on a GPU (synthetic PyTorch HP + LP)")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per window (8)")
    ap.add_argument("--out", default=None, help="JSON result (default $OUT/smoke.json)")
    a = ap.parse_args()
    res: dict = {}
    D = a.duration
    res["hp_alone"] = out(run([PY, "-c", HP, str(D)]))
    res["lp_alone"] = out(run([PY, "-c", LP, str(D)]))
    lp = run([PY, "-c", LP, str(D + 4)])
    time.sleep(3)
    res["plain_hp"] = out(run([PY, "-c", HP, str(D)]))
    res["plain_lp"] = out(lp)
    d = tempfile.mkdtemp()
    for pol in ("temporal", "hummingbird"):
        ctl = f"ipc://{d}/ctl-{pol}"
        pub = f"ipc://{d}/pub-{pol}"
        eng = run(
            [
                PY,
                "-m",
                "hbtui",
                "engine",
                "--profile",
                "programs",
                "--backend",
                "sim",
                "--ctl",
                ctl,
                "--pub",
                pub,
                "--summary-json",
                f"{d}/{pol}.json",
            ]
        )
        time.sleep(3)
        from hbtui.engine.client import EngineClient

        c = EngineClient(ctl, timeout=3.0)
        print(pol, c.call("set_policy", {"policy": pol}), flush=True)
        lp = run(
            [
                PY,
                "-m",
                "hbtui",
                "run",
                "--lp",
                "--task",
                "train",
                "--engine",
                ctl,
                "--",
                PY,
                "-c",
                LP,
                str(D + 4),
            ]
        )
        time.sleep(3)
        hp = run(
            [
                PY,
                "-m",
                "hbtui",
                "run",
                "--hp",
                "--task",
                "svc",
                "--engine",
                ctl,
                "--",
                PY,
                "-c",
                HP,
                str(D),
            ]
        )
        time.sleep(D - 1)
        st = c.call("get_state", {})
        res[f"{pol}_state"] = [t.get("attached") for t in st["tasks"]]
        res[f"{pol}_hp"] = out(hp)
        res[f"{pol}_lp"] = out(lp)
        eng.terminate()
        _, e = eng.communicate(timeout=20)
        res[f"{pol}_engine_tail"] = e[-1500:]
        c.close()
    print(json.dumps(res, indent=1))
    path = a.out or os.path.join(os.environ.get("OUT", "/tmp/out"), "smoke.json")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
