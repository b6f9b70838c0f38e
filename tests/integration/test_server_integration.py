"""A real engine process (sim backend, wall-clock paced) driven over real sockets.

One shared engine (telemetry on ipc, control on loopback TCP, Prometheus on) serves most
tests; a few start short-lived engines for read-only, CURVE and start-up refusals.
Every wait has a timeout so a failure never hangs CI.
"""

from __future__ import annotations

import math
import random
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import msgpack
import pytest
import zmq
from engines import free_port, start_engine, stop, wait_running

from hbtui.engine import protocol as P
from hbtui.engine.client import ClientError, CurveKeys, EngineClient, Subscriber

# A profile of our own: shipped profiles evolve, these tests must not.
PROFILE = """
version = 1
name = "itest"
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
[kernels.fwd_gemm]
grid = 10560
block_us = 15.0
[kernels.adam]
grid = 2640
blocks_per_sm = 4
block_us = 8.0
[[tasks]]
name = "llm"
class = "hp"
priority = 10
slo_factor = 1.0
arrival = { kind = "poisson", rate_hz = 500.0 }
kernels = [
  { kernel = "qkv", gap_us = 20.0, jitter = 0.2 },
  { kernel = "mlp", gap_us = 100.0, jitter = 0.2 },
  { kernel = "qkv", gap_us = 100.0, jitter = 0.2 },
  { kernel = "mlp", gap_us = 100.0, jitter = 0.2 },
]
[[tasks]]
name = "train"
class = "lp"
kernels = ["fwd_gemm", "adam"]
slice_us = 50.0
"""


def write_profile(d: Path) -> str:
    p = d / "itest.toml"
    p.write_text(PROFILE)
    return str(p)


@pytest.fixture(scope="module")
def eng(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("eng")
    pub, ctl, mport = f"ipc://{d}/pub", f"tcp://127.0.0.1:{free_port()}", free_port()
    summary = d / "summary.json"
    cfg = d / "cfg"  # the engine's own user profile directory: saves go there
    proc = start_engine(
        "--profile", write_profile(d), "--backend", "sim", "--pub", pub, "--ctl", ctl,
        "--calibrate", "0.4", "--duration", "120", "--profile-dir", str(d),
        "--metrics", f"127.0.0.1:{mport}", "--summary-json", str(summary),
        env={"XDG_CONFIG_HOME": str(cfg)},
    )  # fmt: skip
    try:
        client = wait_running(ctl)
    except AssertionError:
        proc.kill()
        raise AssertionError(proc.communicate()[1]) from None
    info = {"pub": pub, "ctl": ctl, "mport": mport, "client": client, "dir": d,
            "user": cfg / "hbtui" / "profiles"}  # fmt: skip
    yield info
    client.close()
    rc, err = stop(proc)
    assert rc == 0, err
    assert summary.exists(), err  # SIGTERM flushed the final summary
    assert "stopped:" in err


def sub_of(eng: dict, **kw: object) -> Subscriber:
    sub = Subscriber(eng["pub"], **kw)  # type: ignore[arg-type]
    time.sleep(0.05)  # let the SUBSCRIBE reach the engine
    return sub


def test_late_subscriber_gets_full_state_within_1s(eng: dict) -> None:
    t0 = time.monotonic()
    with Subscriber(eng["pub"]) as sub:
        msg = sub.wait_for("state", 1.5)
    assert msg is not None and time.monotonic() - t0 < 1.5
    body = msg.body
    assert body["backend"] == "sim" and body["phase"] == "running"
    assert {t["name"] for t in body["tasks"]} == {"llm", "train"}
    assert body["kernels"] and body["profile"]["name"] == "itest"
    assert msg.engine_id == eng["client"].ping()["engine_id"]


def test_stats_carry_window_loop_and_telemetry_figures(eng: dict) -> None:
    with sub_of(eng, topics=["stats"]) as sub:
        msg = sub.wait_for("stats", 2.5)
    assert msg is not None
    s = msg.body
    llm, train = s["tasks"]["llm"], s["tasks"]["train"]
    assert llm["requests"] > 0 and 0 <= llm["slo_attainment"] <= 1
    assert llm["p99_ms"] >= llm["p50_ms"] > 0
    assert "window" in llm and llm["window"]["requests"] > 0
    assert train["throughput_norm"] is not None and train["work_per_s"] > 0
    assert 0 <= s["harvest_ratio"] <= 1 and 0 < s["gpu_busy"] <= 1
    assert s["loop"]["decisions_per_s"] > 0
    assert set(s["telemetry"]) >= {"sent", "dropped", "dropped_records", "control_dropped"}
    assert s["baseline_p99_ms"]["llm"] > 0
    assert 0 < s["baseline_attainment"]["llm"] <= 1  # the exclusive run, within today's SLO


def conforms(body: object, td: type, where: str = "") -> None:
    """``body`` has every required key of the TypedDict ``td`` and no undeclared one."""
    assert isinstance(body, dict), where
    req, opt = td.__required_keys__, td.__optional_keys__  # type: ignore[attr-defined]
    assert req <= set(body), f"{where or td.__name__}: missing {sorted(req - set(body))}"
    assert set(body) <= req | opt, f"{where or td.__name__}: extra {sorted(set(body) - req - opt)}"


def test_bodies_and_results_are_the_declared_types(eng: dict) -> None:
    c: EngineClient = eng["client"]
    got: dict[str, dict] = {}
    with sub_of(eng) as sub:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and len(got) < 4:
            m = sub.recv(0.2)
            if m is not None and m.type in ("state", "stats", "slice", "request"):
                got.setdefault(m.type, m.body)
    st, stats = got["state"], got["stats"]
    conforms(st, P.StateBody)
    conforms(st["profile"], P.ProfileRef)
    for t in st["tasks"]:
        conforms(t, P.TaskState, t["name"])
    for name, k in st["kernels"].items():
        conforms(k, P.KernelState, name)
    conforms(stats, P.StatsBody)
    for part, td in (("window", P.WindowFigures), ("telemetry", P.TelemetryCounters),
                     ("loop", P.LoopFigures)):  # fmt: skip
        conforms(stats[part], td, part)
    for name, t in stats["tasks"].items():
        conforms(t, P.TaskStats, name)
        conforms(t["window"], P.TaskWindow, f"{name}.window")
        if "preemption_us" in t:
            conforms(t["preemption_us"], P.Percentiles, name)
    conforms(got["slice"], P.SliceBody)
    assert list(got["slice"]) == list(P.SLICE_FIELDS)  # column order on the wire
    conforms(got["request"], P.RequestBody)
    conforms(c.ping(), P.PingResult)
    conforms(c.get_state(), P.StateBody)
    listed = c.list_profiles()
    conforms(listed, P.ListProfilesResult)
    for e in listed["profiles"]:
        conforms(e, P.ProfileEntry, e["name"])


def test_every_op_round_trips_and_is_echoed(eng: dict) -> None:
    c: EngineClient = eng["client"]
    with sub_of(eng, topics=["event"]) as sub:
        assert c.ping()["protocol"] == 1
        assert c.get_state()["policy"] == "hummingbird"
        assert c.set_priority("train", 3) == {"task": "train", "priority": 3}
        assert c.set_slice("train", us=80)["us"] == 80.0
        assert c.set_slo("llm", ms=50)["slo_ms"] == 50.0
        assert c.set_slo("llm", factor=1.5)["slo_factor"] == 1.5
        assert c.set_policy("temporal") == {"policy": "temporal"}
        assert c.set_policy("hummingbird") == {"policy": "hummingbird"}
        assert c.pause_task("train")["paused"] is True
        assert c.resume_task("train")["paused"] is False
        added = c.add_task({"name": "lp2", "class": "lp", "kernels": ["fwd_gemm"]})
        assert added["task"]["name"] == "lp2" and added["task"]["class"] == "lp"
        conforms(added, P.AddTaskResult)
        conforms(added["task"], P.TaskState)
        assert c.remove_task("lp2") == {"task": "lp2"}
        assert c.reset_stats() == {}
        saved = c.save_profile(name="saved")
        assert saved["path"] == str(eng["user"] / "saved.toml")
        assert Path(saved["path"]).read_text().startswith("version = 1")
        conforms(saved, P.SaveProfileResult)
        kinds = []
        deadline = time.monotonic() + 2
        while len(kinds) < 12 and time.monotonic() < deadline:
            m = sub.recv(0.2)
            if m is not None:
                kinds.append(m.body["kind"])
    assert kinds[:12] == [
        "set_priority", "set_slice", "set_slo", "set_slo", "set_policy", "set_policy",
        "pause_task", "resume_task", "add_task", "remove_task", "reset_stats", "save_profile",
    ]  # fmt: skip
    state = c.get_state()
    train = next(t for t in state["tasks"] if t["name"] == "train")
    assert train["priority"] == 3 and train["slice_us"] == 80.0
    with pytest.raises(ClientError) as e:
        c.set_slo("train", ms=1)
    assert e.value.code == "bad_task"
    with pytest.raises(ClientError) as e:
        c.set_priority("nope", 1)
    assert e.value.code == "unknown_task"
    with pytest.raises(ClientError) as e:
        c.add_task({"name": "x", "class": "lp", "kernels": ["no_such_kernel"]})
    assert e.value.code == "profile_error" and "kernels[0]" in e.value.message


def _lp_blocks(sub: Subscriber, seconds: float) -> list[int]:
    out: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        m = sub.recv(0.1)
        if m is not None and m.type == "slice":
            b = m.body
            out += [
                e - s
                for c, s, e in zip(b["cls"], b["start_block"], b["end_block"], strict=True)
                if c == "lp"
            ]
    return out


def test_set_slice_changes_slice_lengths(eng: dict) -> None:
    c: EngineClient = eng["client"]
    with sub_of(eng, topics=["slice"]) as sub:
        c.set_slice("train", blocks=33)
        time.sleep(0.2)  # slices already in flight complete with the old size: skip them
        while sub.recv(0) is not None:
            pass
        small = _lp_blocks(sub, 0.5)
        c.set_slice("train", blocks=528)
        time.sleep(0.2)
        big = _lp_blocks(sub, 0.5)
    c.set_slice("train", us=50)
    assert small and max(small) <= 33
    assert big and max(big) > 33


def test_malformed_flood_leaves_engine_healthy(eng: dict) -> None:
    c: EngineClient = eng["client"]
    before = c.get_state()
    rng = random.Random(1234)
    good_keys = ["v", "id", "op", "args"]

    def junk() -> bytes:
        r = rng.random()
        if r < 0.2:
            return rng.randbytes(rng.randint(0, 300))
        if r < 0.3:
            return b"\x91" * rng.randint(1, 5000)  # deep nesting
        if r < 0.4:
            return msgpack.packb(rng.choice([1, "x", [1, 2], None, 3.5, True, b"raw"]))
        msg: dict = {"v": 1, "id": f"j{rng.randint(0, 9999)}", "op": "set_slice", "args": {}}
        mut = rng.randrange(10)
        if mut == 0:
            msg["v"] = rng.choice([0, 2, 99, "1", None, 1.0])
        elif mut == 1:
            del msg[rng.choice(good_keys[:3])]
        elif mut == 2:
            msg["op"] = rng.choice(["nope", "", "PING", 5, None, "x" * 500])
        elif mut == 3:
            msg["id"] = rng.choice([5, None, "", "i" * 200, ["a"]])
        elif mut == 4:
            msg["args"] = {
                "task": "train",
                "us": rng.choice([-1, 0, math.nan, math.inf, "5", None]),
            }
        elif mut == 5:
            msg["args"] = {"task": rng.choice(["nope", 5, None, "", "t" * 300]), "blocks": 5}
        elif mut == 6:
            msg["op"] = "set_slo"
            msg["args"] = {"task": "llm", "ms": rng.choice([math.nan, -3.0, 0, 1e300, True])}
        elif mut == 7:
            msg["op"] = "set_priority"
            msg["args"] = {
                "task": "train",
                "priority": rng.choice([1.5, "1", 10**15, -(2**63), None, True]),
            }
        elif mut == 8:
            msg["op"] = rng.choice(["add_task", "load_profile", "set_policy", "remove_task"])
            msg["args"] = {"task": {"name": 5}, "policy": ["x"], "path": 3}
        else:
            msg["args"] = {"task": "train", "us": 5, "blocks": 5, "extra": 1}
        return msgpack.packb(msg)

    ctx = zmq.Context.instance()
    d = ctx.socket(zmq.DEALER)
    d.linger = 0
    d.sndhwm = d.rcvhwm = 100_000
    d.connect(eng["ctl"])
    n = 5000
    for _ in range(n):
        d.send(junk())
    replies, deadline = 0, time.monotonic() + 10
    while replies < n and time.monotonic() < deadline:
        if d.poll(200):
            rep = msgpack.unpackb(d.recv(), raw=False)
            assert rep["ok"] is False and rep["error"]["code"] and rep["error"]["message"]
            replies += 1
    d.close()
    assert replies == n  # every malformed frame got a clear error reply, none crashed it
    # An oversized frame is cut off by ZMQ_MAXMSGSIZE without disturbing anything.
    big = ctx.socket(zmq.DEALER)
    big.linger = 0
    big.connect(eng["ctl"])
    big.send(b"\x00" * (65 * 1024))
    big.close()
    after = c.get_state()
    assert after["tasks"] == before["tasks"] and after["policy"] == before["policy"]
    assert c.ping()["engine_id"] == before["engine_id"]
    with sub_of(eng, topics=["stats"]) as sub:
        s1 = sub.wait_for("stats", 2.5)
        s2 = sub.wait_for("stats", 2.5)
    assert s1 and s2 and s2.body["decisions"] > s1.body["decisions"]  # scheduling continued
    assert s2.body["telemetry"]["control_errors"] >= n


def test_version_mismatch_is_a_clear_error(eng: dict) -> None:
    d = zmq.Context.instance().socket(zmq.DEALER)
    d.linger = 0
    d.connect(eng["ctl"])
    d.send(msgpack.packb({"v": 2, "id": "future", "op": "ping", "args": {}}))
    assert d.poll(3000)
    rep = msgpack.unpackb(d.recv(), raw=False)
    d.close()
    assert rep["id"] == "future" and rep["ok"] is False
    assert rep["error"]["code"] == "version_mismatch"


def test_slow_subscriber_sees_drops_as_seq_gaps(tmp_path: Path) -> None:
    ctl, pub = f"ipc://{tmp_path}/ctl", f"ipc://{tmp_path}/pub"
    proc = start_engine(*_fast_args(ctl, pub), "--sndhwm", "2")
    try:
        wait_running(ctl).close()
        sub = Subscriber(pub, rcvhwm=1)
        sub._sock.rcvbuf = 4096  # noqa: SLF001 - shrink kernel buffering so drops come fast
        try:
            assert sub.recv(2.0) is not None
            time.sleep(1.5)  # the engine's 2-message queue for us overflows
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and sub.dropped == 0:
                sub.recv(0.1)
        finally:
            sub.close()
    finally:
        rc, err = stop(proc)
    assert rc == 0, err
    assert sub.dropped > 0 and sub.received > 0


def _prom(mport: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=3).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("hbtui_"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def test_prometheus_serves_the_stats_figures(eng: dict) -> None:
    with sub_of(eng, topics=["stats"]) as sub:
        for _ in range(3):  # a scrape can straddle a stats update: retry on the next one
            msg = sub.wait_for("stats", 2.5)
            assert msg is not None
            prom = _prom(eng["mport"])
            s = msg.body
            llm, train = s["tasks"]["llm"], s["tasks"]["train"]
            hp, lp = '{class="hp",task="llm"}', '{class="lp",task="train"}'
            expect = {
                f"hbtui_hp_latency_p99_seconds{hp}": llm["p99_ms"] / 1e3,
                f"hbtui_hp_preemption_p99_seconds{hp}": llm["preemption_us"]["p99"] / 1e6,
                f"hbtui_lp_throughput_normalized_ratio{lp}": train["throughput_norm"],
                "hbtui_harvest_ratio": s["harvest_ratio"],
                "hbtui_telemetry_dropped_total": s["telemetry"]["dropped"],
            }
            if llm["slo_attainment"] is not None:
                expect[f"hbtui_hp_slo_attainment_ratio{hp}"] = llm["slo_attainment"]
            if all(prom.get(k) == pytest.approx(v) for k, v in expect.items()):
                return
    raise AssertionError(f"prometheus {prom} != stats {expect}")


def test_load_profile_rebuilds_and_recalibrates(eng: dict) -> None:
    c: EngineClient = eng["client"]
    with pytest.raises(ClientError) as e:
        c.load_profile(path=str(eng["dir"] / "missing.toml"))  # in a --profile-dir
    assert e.value.code == "profile_error" and "no such profile" in e.value.message
    path = eng["user"] / "saved.toml"
    if not path.exists():
        c.save_profile(name="saved")
    res = c.load_profile(path=str(path))
    assert set(res["tasks"]) >= {"llm", "train"}
    c.close()
    eng["client"] = wait_running(eng["ctl"])
    assert eng["client"].get_state()["profile"]["path"] == str(path)


# -- short-lived engines ----------------------------------------------------------------
def _fast_args(ctl: str, pub: str) -> list[str]:
    prof = write_profile(Path(pub.removeprefix("ipc://")).parent) if "ipc" in pub else "default"
    return ["--profile", prof, "--backend", "sim", "--pub", pub, "--ctl", ctl,
            "--calibrate", "0", "--duration", "30"]  # fmt: skip


def test_readonly_refuses_mutations(tmp_path: Path) -> None:
    ctl = f"ipc://{tmp_path}/ctl"
    proc = start_engine(*_fast_args(ctl, f"ipc://{tmp_path}/pub"), "--readonly")
    try:
        c = wait_running(ctl)
        assert c.ping()["readonly"] is True
        for call in (lambda: c.set_priority("train", 1), c.reset_stats,
                     lambda: c.save_profile(name="x")):  # fmt: skip
            with pytest.raises(ClientError) as e:
                call()
            assert e.value.code == "readonly"
        assert c.get_state()["readonly"] is True
        assert c.list_profiles()["profiles"]  # a read op: served read-only too
        c.close()
    finally:
        rc, err = stop(proc, sig=signal.SIGINT)
    assert rc == 0, err  # SIGINT stops cleanly too, with the final summary
    assert "stopped:" in err and "Traceback" not in err


def _one_line_exit2(proc: subprocess.Popen[str]) -> str:
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2, err
    lines = [ln for ln in err.splitlines() if "error" in ln]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_non_loopback_without_keys_is_refused(tmp_path: Path) -> None:
    proc = start_engine(*_fast_args(f"tcp://0.0.0.0:{free_port()}", f"ipc://{tmp_path}/p"))
    line = _one_line_exit2(proc)
    assert "not loopback" in line and "--insecure" in line


def test_port_in_use_is_one_line_exit_2(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = start_engine(*_fast_args(f"tcp://127.0.0.1:{port}", f"ipc://{tmp_path}/p"))
        line = _one_line_exit2(proc)
    assert "cannot bind --ctl" in line and "in use" in line


def test_bad_profile_is_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("version = 1\n[[tasks]]\nname = 'a'\nclass = 'hp'\nslo_ms = -1\n")
    proc = start_engine("--profile", str(bad), "--backend", "sim")
    line = _one_line_exit2(proc)
    assert str(bad) in line


def test_curve_allows_listed_clients_only(tmp_path: Path) -> None:
    from hbtui.engine.keys import generate

    generate(tmp_path / "keys")
    k = tmp_path / "keys"
    ctl, pub = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    proc = start_engine(*_fast_args(ctl, pub), "--curve-secret", str(k / "server.key_secret"),
                        "--curve-allow", str(k / "client.key"))  # fmt: skip
    try:
        keys = CurveKeys.from_files(str(k / "client.key_secret"), str(k / "server.key"))
        c = wait_running(ctl, curve=keys)
        with Subscriber(pub, curve=keys) as sub:
            assert sub.wait_for("state", 2.0) is not None
        c.close()
        stranger = EngineClient(ctl, timeout=0.5)  # no keys: the handshake never completes
        with pytest.raises(ClientError) as e:
            stranger.ping()
        assert e.value.code == "timeout"
        stranger.close()
    finally:
        rc, err = stop(proc)
    assert rc == 0, err


def test_keys_generate_cli(tmp_path: Path) -> None:
    from hbtui.engine.server import keys_main

    assert keys_main(["generate", "--dir", str(tmp_path / "k")]) == 0
    names = sorted(p.name for p in (tmp_path / "k").iterdir())
    assert names == ["client.key", "client.key_secret", "server.key", "server.key_secret"]
    assert (tmp_path / "k" / "server.key_secret").stat().st_mode & 0o077 == 0
    assert keys_main(["generate", "--dir", str(tmp_path / "k")]) == 2  # no silent overwrite


def test_engine_with_native_hp_issue_modelled_calibrates_and_runs(tmp_path: Path) -> None:
    """Calibration runs its phases on one backend: HP requests handed to the (simulated)
    native HP thread must be drained before the next phase, or it would crash."""
    prof = tmp_path / "chain.toml"
    prof.write_text(
        PROFILE.replace(
            'policy = "hummingbird"', 'policy = "hummingbird"\n[engine.sim]\nhp_chain = true', 1
        )
    )
    ctl, pub = f"ipc://{tmp_path}/ctl", f"ipc://{tmp_path}/pub"
    proc = start_engine("--profile", str(prof), "--backend", "sim", "--pub", pub, "--ctl", ctl,
                        "--calibrate", "0.3", "--duration", "30")  # fmt: skip
    try:
        c = wait_running(ctl)
        state = c.get_state()
        assert state["hp_issue"] == "native (simulated)"
        with Subscriber(pub, topics=["stats"]) as sub:
            msg = sub.wait_for("stats", 3.0, lambda m: m.body["tasks"]["train"]["work_per_s"] > 0)
        assert msg is not None
        assert msg.body["tasks"]["llm"]["requests"] > 0
        assert msg.body["baseline_p99_ms"]["llm"] > 0  # calibrated through the chain
        c.close()
    finally:
        rc, err = stop(proc)
    assert rc == 0, err


def test_list_profiles_names_what_the_engine_can_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shipped and user profiles of the engine's machine; user ones shadow shipped ones and
    show under ``~``; each loads by its name."""
    import engines

    home = tmp_path / "home"
    user = home / "cfg" / "hbtui" / "profiles"
    user.mkdir(parents=True)
    (user / "mine.toml").write_text(PROFILE.replace('name = "itest"', 'name = "mine"'))
    (user / "bursty.toml").write_text(PROFILE.replace('name = "itest"', 'name = "bursty"'))
    monkeypatch.setitem(engines.ENV, "HOME", str(home))
    monkeypatch.setitem(engines.ENV, "XDG_CONFIG_HOME", str(home / "cfg"))
    ctl, pub = f"ipc://{tmp_path}/ctl", f"ipc://{tmp_path}/pub"
    proc = start_engine(*_fast_args(ctl, pub))
    try:
        c = wait_running(ctl)
        got = {e["name"]: e for e in c.list_profiles()["profiles"]}
        assert got["mine"] == {"name": "mine", "origin": "user",
                               "path": "~/cfg/hbtui/profiles/mine.toml"}  # fmt: skip
        assert got["bursty"]["origin"] == "user"  # shadows the shipped one
        assert got["default"]["origin"] == "shipped"
        assert got["default"]["path"].endswith("default.toml")
        with pytest.raises(ClientError) as e:
            c.call("list_profiles", {"dir": "/"})
        assert e.value.code == "bad_args"
        assert c.load_profile(name="mine")["profile"] == "mine"
        c.close()
        c = wait_running(ctl)
        assert c.get_state()["profile"]["path"] == str(user / "mine.toml")
        c.close()
    finally:
        rc, err = stop(proc)
    assert rc == 0, err


def test_subscriber_drops_reported_with_ping_show_in_stats(eng: dict) -> None:
    """PUB cannot count per-subscriber drops: subscribers report their seq gaps with
    ping and the engine's stats sum them; a bad report is refused naming the field."""
    c = eng["client"]
    c.call("ping", {"subscriber": "itest-a", "received": 100, "gaps": 7})
    c.call("ping", {"subscriber": "itest-b", "received": 50, "gaps": 2})
    c.call("ping", {"subscriber": "itest-a", "received": 120, "gaps": 9})  # replaces a's
    with pytest.raises(ClientError, match="gaps"):
        c.call("ping", {"subscriber": "itest-c", "gaps": -1})
    with pytest.raises(ClientError, match="unknown argument"):
        c.call("ping", {"subscriber": "itest-c", "lost": 1})
    with sub_of(eng, topics=["stats"]) as sub:
        msg = sub.wait_for("stats", 2.5)
    assert msg is not None
    tel = msg.body["telemetry"]
    assert tel["subscribers_reporting"] >= 2
    assert tel["subscriber_gaps"] >= 11 and tel["subscriber_received"] >= 170


def test_subscriber_report_counts_its_own_seq_gaps() -> None:
    from hbtui.engine.client import _SubBase
    from hbtui.engine.protocol import encode, envelope

    s = _SubBase(None)
    for seq in (1, 2, 5, 6, 10):
        assert s._decode([b"event", encode(envelope("event", seq, 0, "e1", {}))]) is not None
    r = s.report()
    assert (r["received"], r["gaps"]) == (5, 5) and r["subscriber"] == s.sub_id
