"""The metrics endpoint of a real engine process (sim backend): every metric of
docs/metrics.md with its type and labels, histograms consistent with ``stats``, and
counters that only go up, across a stats reset too."""

from __future__ import annotations

import math
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from engines import free_port, start_engine, stop, wait_running
from prometheus_client.parser import text_string_to_metric_families

from hbtui.engine.client import EngineClient, Subscriber
from hbtui.engine.prom.catalog import LATENCY_BOUNDS_S, METRICS, PREEMPTION_BOUNDS_S

# Our own profile: an HP task with an SLO and LP tasks capped in time and in blocks, so
# every metric of the catalog has a series.
PROFILE = """
version = 1
name = "promtest"
[engine]
backend = "sim"
policy = "hummingbird"
[kernels.qkv]
grid = 132
blocks_per_sm = 1
block_us = 18.0
[kernels.mlp]
grid = 264
block_us = 22.0
[kernels.gemm]
grid = 10560
block_us = 15.0
[[tasks]]
name = "llm"
class = "hp"
priority = 10
slo_ms = 2.0
arrival = { kind = "poisson", rate_hz = 400.0 }
kernels = [
  { kernel = "qkv", gap_us = 20.0, jitter = 0.2 },
  { kernel = "mlp", gap_us = 100.0, jitter = 0.2 },
]
[[tasks]]
name = "train"
class = "lp"
kernels = ["gemm"]
slice_us = 50.0
[[tasks]]
name = "batch"
class = "lp"
kernels = ["gemm"]
slice_blocks = 264
"""

Families = dict[str, Any]  # name -> prometheus_client Metric (parsed)


def scrape(port: int) -> Families:
    url = f"http://127.0.0.1:{port}/metrics"
    text = urllib.request.urlopen(url, timeout=3).read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def values(fams: Families) -> dict[tuple[str, frozenset], float]:
    """Every cumulative sample (counters, histogram buckets/count/sum) by name and labels."""
    out = {}
    for m in METRICS:
        if m.type in ("counter", "histogram"):
            fam = fams.get(m.name.removesuffix("_total"))
            for s in fam.samples if fam is not None else []:
                out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def next_stats(sub: Subscriber) -> dict[str, Any]:
    msg = sub.wait_for("stats", 3.0)
    assert msg is not None, "no stats within 3 s"
    return msg.body


@pytest.fixture(scope="module")
def eng(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    d = tmp_path_factory.mktemp("prom")
    (d / "promtest.toml").write_text(PROFILE)
    pub, ctl, mport = f"ipc://{d}/pub", f"tcp://127.0.0.1:{free_port()}", free_port()
    proc = start_engine(
        "--profile", str(d / "promtest.toml"), "--backend", "sim", "--pub", pub,
        "--ctl", ctl, "--calibrate", "0.3", "--duration", "60",
        "--metrics", f"127.0.0.1:{mport}",
    )  # fmt: skip
    try:
        client = wait_running(ctl)
    except AssertionError:
        proc.kill()
        raise AssertionError(proc.communicate()[1]) from None
    sub = Subscriber(pub, topics=["stats"])
    next_stats(sub)  # the exporter is fed from the same flush as this
    next_stats(sub)
    yield {"client": client, "mport": mport, "sub": sub, "ctl": ctl}
    sub.close()
    client.close()
    rc, err = stop(proc)
    assert rc == 0, err


def test_every_documented_metric_has_its_type_and_labels(eng: dict[str, Any]) -> None:
    fams = scrape(eng["mport"])
    c: EngineClient = eng["client"]
    for m in METRICS:
        # the text format names a counter's family without _total; info is a gauge there
        fam = fams.get(m.name.removesuffix("_total"))
        assert fam is not None, f"{m.name} not served"
        assert fam.type == ("gauge" if m.type == "info" else m.type), m.name
        assert fam.samples, m.name
        for s in fam.samples:
            labels = set(s.labels) - ({"le"} if s.name.endswith("_bucket") else set())
            assert labels == set(m.labels), (s.name, s.labels)
        if "class" in m.labels:
            want = {"hp"} if m.name.startswith("hbtui_hp_") else {"lp"}
            assert {s.labels["class"] for s in fam.samples} == want, m.name
    info = fams["hbtui_engine_info"].samples[0]
    assert info.value == 1
    assert info.labels["engine_id"] == c.ping()["engine_id"]
    assert info.labels["backend"] == "sim" and info.labels["profile"] == "promtest"
    assert info.labels["policy"] == "hummingbird" and info.labels["device_index"] == "0"
    assert "simulated" in info.labels["gpu"] and info.labels["hostname"]
    # the slice cap is served in the unit it was set in
    caps = {s.labels["task"]: s.value for s in fams["hbtui_lp_slice_cap_seconds"].samples}
    assert caps == {"train": pytest.approx(50e-6)}
    blocks = {s.labels["task"]: s.value for s in fams["hbtui_lp_slice_cap_blocks"].samples}
    assert blocks == {"batch": 264}
    slo = fams["hbtui_hp_slo_seconds"].samples
    assert [(s.labels["task"], s.value) for s in slo] == [("llm", pytest.approx(2e-3))]


def _settled(eng: dict[str, Any]) -> dict[str, Any]:
    """A stats body after which the HP counts stand still (llm paused, nothing in flight)."""
    last = None
    for _ in range(8):
        s = next_stats(eng["sub"])
        n = s["tasks"]["llm"]["requests"]
        if n == last:
            time.sleep(0.2)  # the scrape reads the update of that same flush
            return s
        last = n
    raise AssertionError("llm's request count did not settle after pause_task")


def test_histogram_count_is_the_requests_of_stats(eng: dict[str, Any]) -> None:
    c: EngineClient = eng["client"]
    c.pause_task("llm")
    try:
        s = _settled(eng)
        fams = scrape(eng["mport"])
    finally:
        c.resume_task("llm")
    llm = s["tasks"]["llm"]
    n = llm["requests"]
    assert n > 100  # 400 Hz for a few seconds
    got = {x.name: x for x in fams["hbtui_hp_request_latency_seconds"].samples}
    assert got["hbtui_hp_request_latency_seconds_count"].value == n
    req = fams["hbtui_hp_requests"].samples[0]
    assert req.name == "hbtui_hp_requests_total" and req.value == n
    misses = fams["hbtui_hp_slo_misses"].samples[0].value
    assert misses == n - round(llm["slo_attainment"] * n)
    for fam, bounds in (("hbtui_hp_request_latency_seconds", LATENCY_BOUNDS_S),
                        ("hbtui_hp_preemption_latency_seconds", PREEMPTION_BOUNDS_S)):  # fmt: skip
        buckets = [x for x in fams[fam].samples if x.name.endswith("_bucket")]
        les = [float(x.labels["le"]) for x in buckets]
        assert les == [*bounds, math.inf]
        counts = [x.value for x in buckets]
        assert counts == sorted(counts)  # cumulative
        count = next(x.value for x in fams[fam].samples if x.name.endswith("_count"))
        assert counts[-1] == count
    # the mean from _sum/_count is the engine's (the sum is exact, not from buckets)
    mean = got["hbtui_hp_request_latency_seconds_sum"].value / n
    assert llm["p50_ms"] / 1e3 / 3 < mean < llm["p99_ms"] / 1e3
    # the p99 gauge and the p99 from the histogram's buckets agree to a bucket
    lat = [x for x in fams["hbtui_hp_request_latency_seconds"].samples
           if x.name.endswith("_bucket")]  # fmt: skip
    i = next(i for i, x in enumerate(lat) if x.value >= 0.99 * n)
    p99 = llm["p99_ms"] / 1e3
    assert 0 < i < len(LATENCY_BOUNDS_S)
    assert LATENCY_BOUNDS_S[i - 1] < p99 * 1.01 and p99 * 0.99 <= LATENCY_BOUNDS_S[i]


def test_counters_only_go_up_across_a_stats_reset(eng: dict[str, Any]) -> None:
    c: EngineClient = eng["client"]
    next_stats(eng["sub"])
    before = values(scrape(eng["mport"]))
    assert before
    c.reset_stats()
    seen = [before]
    for _ in range(2):
        s = next_stats(eng["sub"])
        time.sleep(0.2)
        seen.append(values(scrape(eng["mport"])))
    for a, b in zip(seen, seen[1:], strict=False):
        assert a.keys() == b.keys()
        down = {k: (a[k], b[k]) for k in a if b[k] < a[k]}
        assert not down, down
    key = ("hbtui_hp_requests_total", frozenset({("task", "llm"), ("class", "hp")}))
    # after the reset stats count from zero again; the counter carries on from before
    assert seen[-1][key] > before[key] >= s["tasks"]["llm"]["requests"] > 0


def test_a_removed_task_leaves_the_scrape(eng: dict[str, Any]) -> None:
    c: EngineClient = eng["client"]
    c.remove_task("batch")
    next_stats(eng["sub"])
    time.sleep(0.2)
    fams = scrape(eng["mport"])
    tasks = {s.labels.get("task") for f in fams.values() for s in f.samples}
    assert "batch" not in tasks and {"llm", "train"} <= tasks


def _probe(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "hbtui.engine.probe", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20)


def test_readiness_probe_pings_the_engine(eng: dict[str, Any]) -> None:
    r = _probe("--ctl", eng["ctl"])
    assert r.returncode == 0 and r.stdout.strip().endswith(": running"), r.stdout + r.stderr
    dead = f"tcp://127.0.0.1:{free_port()}"
    r = _probe("--ctl", dead, "--timeout", "0.3", "--alive")
    assert r.returncode == 1 and r.stdout.startswith(f"no answer from {dead}")
    r = _probe("--ctl", dead, "--curve-secret", "x")
    assert r.returncode == 2 and "needs both" in r.stdout
