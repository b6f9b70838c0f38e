"""Property (issue 14): well-formed ops with arbitrary values for every field never kill,
wedge or bloat the engine. For each generated op against one real sim engine: the reply
comes, ``ping`` answers within 100 ms, a refused op leaves the state unchanged, and RSS
stays within a bound. The figures (inputs tried, worst ping, RSS) are printed and written
to ``$HBTUI_HARDENING_JSON`` when set (docs/benchmarks/hardening.md quotes a run).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from engines import start_engine, stop, wait_running
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hbtui.engine.client import ClientError, EngineClient

PROFILE = """version = 1
name = "prop"
[engine]
backend = "sim"
[kernels.qkv]
grid = 132
block_us = 18.0
[kernels.gemm]
grid = 2640
block_us = 15.0
[[tasks]]
name = "llm"
class = "hp"
slo_ms = 5.0
arrival = { kind = "poisson", rate_hz = 300.0 }
kernels = [{ kernel = "qkv", gap_us = 20.0 }]
[[tasks]]
name = "train"
class = "lp"
kernels = ["gemm"]
"""
EXAMPLES = 200
RSS_BOUND_KB = 64_000
FIGURES: dict[str, Any] = {"inputs": 0, "refused": 0, "accepted": 0, "max_ping_ms": 0.0}

# -- arbitrary values: every type msgpack carries, with the edges that broke things -----
ints = st.one_of(st.integers(-(2**63), 2**64 - 1), st.sampled_from([0, 1, -1, 2**31, 2**62]))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.0009, 1e-300, 1e300, 1e305, -0.0, 5e-324]))  # fmt: skip
texts = st.one_of(st.text(max_size=40), st.sampled_from(["", "x" * 5000, "[/]", "../etc"]))
scalars = st.one_of(ints, floats, texts, st.booleans(), st.none())
values = st.one_of(scalars, st.lists(scalars, max_size=4),
                   st.dictionaries(st.text(max_size=8), scalars, max_size=3))  # fmt: skip
names = st.one_of(st.sampled_from(["llm", "train", "nope", "gemm"]), texts)
kernels = st.one_of(st.sampled_from(["qkv", "gemm"]), texts)


def maybe(d: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Some of the fields in ``d`` (each a strategy): well-formed keys, any values."""
    return st.fixed_dictionaries({}, optional=d)


step = st.one_of(kernels, maybe({"kernel": kernels, "gap_us": st.one_of(floats, ints, values),
                                 "jitter": st.one_of(floats, values)}))  # fmt: skip
arrival = maybe({
    "kind": st.sampled_from(["poisson", "periodic", "closed", "trace", "x"]),
    "rate_hz": st.one_of(floats, ints), "outstanding": st.one_of(ints, floats),
    "think_us": st.one_of(floats, ints), "path": texts,
})  # fmt: skip
task = maybe({
    "name": names, "class": st.sampled_from(["hp", "lp", "mid"]), "priority": ints,
    "slo_ms": st.one_of(floats, ints), "slo_factor": st.one_of(floats, ints),
    "arrival": arrival, "kernels": st.lists(step, max_size=70), "paused": values,
    "slice_us": st.one_of(floats, ints), "slice_blocks": st.one_of(ints, floats),
})  # fmt: skip
num = st.one_of(ints, floats, values)
OPS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "set_priority": maybe({"task": names, "priority": num}),
    "set_slice": maybe({"task": names, "us": num, "blocks": num}),
    "set_slo": maybe({"task": names, "ms": num, "factor": num}),
    "set_policy": maybe({"policy": st.one_of(st.sampled_from(["temporal", "fifo"]), texts)}),
    "pause_task": maybe({"task": names}),
    "resume_task": maybe({"task": names}),
    "add_task": maybe({"task": st.one_of(task, values)}),
    "save_profile": maybe({"name": names, "path": texts, "shadow": values}),
    "load_profile": maybe({"name": st.sampled_from(["../x", "nope", ""]), "path": texts}),
    "list_profiles": maybe({}),
    "get_state": maybe({}),
}
ops = st.sampled_from(sorted(OPS)).flatmap(lambda op: st.tuples(st.just(op), OPS[op]))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def eng(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("prop")
    (d / "prop.toml").write_text(PROFILE)
    ctl, pub = f"ipc://{d}/ctl", f"ipc://{d}/pub"
    proc = start_engine(
        "--profile", str(d / "prop.toml"), "--backend", "sim", "--ctl", ctl, "--pub", pub,
        "--calibrate", "0", "--duration", "300", env={"XDG_CONFIG_HOME": str(d / "cfg")},
    )  # fmt: skip
    try:
        c = wait_running(ctl)
    except AssertionError:
        proc.kill()
        raise AssertionError(proc.communicate()[1]) from None
    FIGURES["rss_before_kb"] = rss_kb(proc.pid)
    yield {"c": c, "proc": proc}
    FIGURES["rss_after_kb"] = rss_kb(proc.pid)
    c.close()
    rc, err = stop(proc)
    print(f"\nhardening property figures: {json.dumps(FIGURES)}")
    if out := os.environ.get("HBTUI_HARDENING_JSON"):
        Path(out).write_text(json.dumps(FIGURES, indent=2) + "\n")
    assert rc == 0, err
    assert "Traceback" not in err, err


def _state(c: EngineClient) -> tuple[Any, Any]:
    s = c.get_state()
    return s["tasks"], s["policy"]


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(op_args=ops)
def test_any_op_leaves_the_engine_responsive_and_unchanged_when_refused(
    eng: dict, op_args: tuple[str, dict[str, Any]]
) -> None:
    c: EngineClient = eng["c"]
    op, args = op_args
    before = _state(c)
    FIGURES["inputs"] += 1
    try:
        res = c.call(op, args, 5.0)
    except ClientError as e:
        assert e.code != "timeout", f"{op} {args!r}: no reply"
        assert e.code != "internal", f"{op} {args!r}: {e.message}"
        FIGURES["refused"] += 1
        assert _state(c) == before, f"{op} refused ({e.code}) but changed the state"
    else:
        FIGURES["accepted"] += 1
        if op == "add_task":  # keep the engine small for the next examples
            c.remove_task(res["task"]["name"])
        elif op == "load_profile":
            raise AssertionError(f"load_profile {args!r} loaded something")
    t0 = time.monotonic()
    c.ping()
    ms = (time.monotonic() - t0) * 1e3
    FIGURES["max_ping_ms"] = max(FIGURES["max_ping_ms"], round(ms, 3))
    assert ms < 100, f"ping took {ms:.1f} ms after {op}"
    grown = rss_kb(eng["proc"].pid) - FIGURES["rss_before_kb"]
    assert grown < RSS_BOUND_KB, f"RSS grew {grown} KiB"
