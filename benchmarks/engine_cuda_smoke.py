"""Drive a headless engine over ZeroMQ (ping, get_state, set_slice, telemetry, Prometheus).

Run beside `hbtui engine --profile default --backend auto --duration 14 --metrics
127.0.0.1:9400` on the GPU box; writes $OUT/engine_cuda_zmq.json. Note: the "before" and
"after" slice samples include telemetry buffered while it waited for calibration.
"""

import json
import os
import statistics
import time
import urllib.request

from hbtui.engine.client import EngineClient, Subscriber

out = {}
sub = Subscriber("tcp://127.0.0.1:5555")
t0 = time.time()
st = sub.wait_for("state", 20.0)
out["state_after_s"] = round(time.time() - t0, 2)
out["device"] = st.body.get("device") if st else None
out["backend"] = st.body.get("backend") if st else None
c = EngineClient("tcp://127.0.0.1:5556", timeout=5.0)
rtt = []
for _ in range(200):
    a = time.perf_counter()
    c.call("ping")
    rtt.append((time.perf_counter() - a) * 1e3)
out["ping_ms"] = {"p50": statistics.median(rtt), "p99": sorted(rtt)[int(0.99 * len(rtt)) - 1]}
# wait for calibration to finish
deadline = time.time() + 20
while time.time() < deadline and c.call("get_state").get("phase") != "running":
    time.sleep(0.2)


def lp_sizes(seconds):
    sizes, gpu = [], 0
    end = time.time() + seconds
    while time.time() < end:
        m = sub.recv(0.5)
        if m is None:
            continue
        if m.type == "gpu":
            gpu += 1
        if m.type == "slice":
            b = m.body
            for cls, s0, s1 in zip(b["cls"], b["start_block"], b["end_block"], strict=True):
                if cls == "lp":
                    sizes.append(s1 - s0)
    return sizes, gpu


before, g1 = lp_sizes(2.0)
c.call("set_slice", {"task": "train", "blocks": 924})
after, g2 = lp_sizes(2.0)
out["lp_slice_blocks_before"] = {
    "n": len(before),
    "median": statistics.median(before) if before else None,
}
out["lp_slice_blocks_after_set_blocks_924"] = {
    "n": len(after),
    "max": max(after) if after else None,
    "median": statistics.median(after) if after else None,
}
out["gpu_messages_4s"] = g1 + g2
stats = sub.wait_for("stats", 3.0)
out["stats_tasks"] = stats.body.get("tasks") if stats else None
try:
    txt = urllib.request.urlopen("http://127.0.0.1:9400/metrics", timeout=3).read().decode()
    out["prom_lines"] = [ln for ln in txt.splitlines() if ln.startswith("hbtui_")][:12]
except Exception as e:
    out["prom_error"] = repr(e)
out["dropped"] = sub.dropped
print(json.dumps(out, indent=1, default=str))
json.dump(
    out, open(os.path.join(os.environ["OUT"], "engine_cuda_zmq.json"), "w"), indent=1, default=str
)
