"""The LP gate on CPU: launches (and graph launches) wait in the calling thread until the
engine grants their seq; pre-grants; several threads; a sync while a launch is held;
engine death -> grace -> ungated with one warning -> gated again on the heartbeat; HP
launches are never held. Nothing here waits without a deadline."""

from __future__ import annotations

import time

from conftest import Native, Prog, prog_env

from hbtui.attach import layout as L

WARNING = "engine heartbeat older than"


def _prog(native: Native, att, *steps: str, **env: str) -> Prog:  # noqa: ANN001
    return Prog([str(native.prog), "dlsym", *steps], prog_env(native, att.name, "lp", **env))


def _records(att, n: int, timeout: float = 10.0) -> list[L.Launch]:  # noqa: ANN001
    out: list[L.Launch] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out += att.launches()
        time.sleep(0.002)
    assert len(out) >= n, f"{len(out)} of {n} launch records"
    return out


def test_lp_launch_held_until_granted(native: Native, engine) -> None:
    e = engine()
    p = _prog(native, e.att, "launch:3")
    (pend,) = e.wait_pending()
    assert (pend.seq, pend.func, tuple(pend.grid), tuple(pend.block), pend.stream) == (
        1, 0xF00, (4, 2, 1), (128, 1, 1), 0x100)  # fmt: skip
    assert pend.kind == L.KIND_KERNEL and pend.since_ns > 0
    assert p.quiet(0.3) == []  # held: the driver has not seen it
    e.grant(1)
    p.expect("launch 0")
    (pend,) = e.wait_pending()
    assert pend.seq == 2
    assert p.quiet(0.1) == []
    e.grant(3)
    p.expect("launch 2")
    assert p.finish() == 0
    recs = e.att.launches()
    assert [x.seq for x in recs] == [1, 2, 3]
    assert all(x.flags & L.LF_HELD and not x.flags & L.LF_UNGATED for x in recs[:2])
    assert recs[2].flags & L.LF_PREGRANTED  # grant(3) came while seq 2 was held
    assert recs[0].issue_ns - recs[0].enqueue_ns >= 300_000_000
    assert e.att.h.held_launches == 2 and e.att.pending() == []
    assert not any(WARNING in x for x in p.err)


def test_pregranted_launches_do_not_wait(native: Native, engine) -> None:
    e = engine()
    e.grant(4)
    p = _prog(native, e.att, "launch:6")
    p.expect("launch 3")
    (pend,) = e.wait_pending()
    assert pend.seq == 5
    e.grant(6)
    assert p.finish() == 0
    flags = [x.flags for x in e.att.launches()]
    assert all(f & L.LF_PREGRANTED for f in flags[:4])
    assert flags[4] & L.LF_HELD and flags[5] & L.LF_PREGRANTED


def test_graph_launch_is_gated(native: Native, engine) -> None:
    e = engine()
    p = _prog(native, e.att, "graph:2")
    (pend,) = e.wait_pending()
    assert pend.kind == L.KIND_GRAPH and pend.func == 0xA000
    assert p.quiet(0.2) == []
    e.grant(2)
    assert p.finish() == 0
    assert [x.kind for x in e.att.launches()] == [L.KIND_GRAPH] * 2


def test_several_threads_each_launch_waits_for_its_own_seq(native: Native, engine) -> None:
    e = engine()
    p = _prog(native, e.att, "threads:4:5")
    granted: list[int] = []
    got: list[L.Launch] = []
    deadline = time.monotonic() + 20
    while len(got) < 20 and time.monotonic() < deadline:
        pend = e.wait_pending()
        seq = pend[0].seq  # oldest first
        assert seq == len(granted) + 1  # seqs are handed out densely, in arrival order
        e.grant(seq)
        granted.append(seq)
        new = _records(e.att, 1)
        assert [x.seq for x in new] == [seq]  # exactly the granted launch went
        got += new
    p.expect("threads done")
    assert p.finish() == 0
    assert [x.seq for x in got] == list(range(1, 21))
    by_thread: dict[int, list[int]] = {}
    for x in got:
        by_thread.setdefault(x.tid, []).append(x.seq)
    assert len(by_thread) == 4 and all(len(v) == 5 for v in by_thread.values())
    assert len({x.stream for x in got}) == 4


def test_sync_while_a_launch_is_held_does_not_deadlock(native: Native, engine) -> None:
    e = engine()
    e.grant(0)
    p = _prog(native, e.att, "launch:1", "holdsync", FAKE_KERNEL_US="1000")
    e.wait_pending()
    e.grant(1)
    p.expect("launch 0")
    (pend,) = e.wait_pending()  # the holdsync thread's launch
    p.expect("synced", timeout=5)  # the main thread's cuCtxSynchronize returned meanwhile
    assert [x.seq for x in e.att.pending()] == [pend.seq]
    e.grant(pend.seq)
    p.expect("joined")
    assert p.finish() == 0


def test_engine_death_grace_then_ungated_then_gated_again(native: Native, engine, tmp_path) -> None:
    e = engine(grace_ms=300)
    go1, go2 = tmp_path / "go1", tmp_path / "go2"
    p = _prog(native, e.att, "launch:1", f"wait:{go1}", "launch:3", f"wait:{go2}", "null:1")
    e.wait_pending()
    e.stop_beating()  # the engine "dies" while a launch is held
    t0 = time.monotonic()
    p.expect("launch 0", timeout=5)
    assert time.monotonic() - t0 >= 0.2  # let go only once the grace period passed
    go1.touch()
    p.expect("launch 2")  # ungated: no waiting, no more warnings
    assert e.att.h.ungated == 1
    e.start_beating()  # the engine is back
    time.sleep(0.05)
    go2.touch()
    e.wait_pending()  # gated again
    assert p.quiet(0.2) == []
    e.grant(e.att.next_seq)
    p.expect("null 0")
    assert p.finish() == 0
    warnings = [x for x in p.err if WARNING in x]
    assert len(warnings) == 1 and "'test'" in warnings[0], p.err
    recs = e.att.launches()
    assert recs[0].flags & L.LF_HELD and recs[0].flags & L.LF_UNGATED
    assert all(x.flags & L.LF_UNGATED and not x.flags & L.LF_HELD for x in recs[1:4])
    assert recs[4].flags & L.LF_HELD and not recs[4].flags & L.LF_UNGATED
    assert e.att.h.ungated == 0 and e.att.h.ungated_events == 1


def test_stale_heartbeat_at_the_first_launch(native: Native, engine) -> None:
    e = engine(grace_ms=100)
    e.stop_beating()
    time.sleep(0.15)
    p = _prog(native, e.att, "launch:5")
    assert p.finish() == 0
    assert sum(WARNING in x for x in p.err) == 1
    assert all(x.flags & L.LF_UNGATED for x in e.att.launches())


def test_pass_mode_holds_nothing(native: Native, engine) -> None:
    e = engine(gated=False)
    p = _prog(native, e.att, "launch:3")
    assert p.finish() == 0 and p.err == []
    assert all(x.flags & L.LF_UNGATED for x in e.att.launches())


def test_switching_to_pass_releases_held_launches(native: Native, engine) -> None:
    e = engine()
    p = _prog(native, e.att, "launch:2")
    e.wait_pending()
    with e.lock:
        e.att.set_gated(False)
    assert p.finish() == 0 and p.err == []


def test_hp_launches_are_never_held(native: Native, engine) -> None:
    e = engine(cls=L.CLASS_HP, grace_ms=100)  # gated, nothing granted ...
    e.stop_beating()
    time.sleep(0.15)  # ... and the engine gone
    p = Prog([str(native.prog), "dlsym", "launch:3"], prog_env(native, e.att.name, "hp"))
    assert p.finish(timeout=5) == 0 and p.err == []
    recs = e.att.launches()
    assert len(recs) == 3 and not any(x.flags & (L.LF_HELD | L.LF_UNGATED) for x in recs)
    assert e.att.h.held_launches == 0


def test_captured_lp_launch_is_not_gated_but_its_graph_is(native: Native, engine) -> None:
    e = engine()
    p = _prog(native, e.att, "capture")
    (pend,) = e.wait_pending()
    assert pend.kind == L.KIND_GRAPH  # the captured launch went straight into the graph
    e.grant(pend.seq)
    assert p.finish() == 0
    recs = e.att.launches()
    assert recs[0].flags & L.LF_CAPTURED and recs[1].kind == L.KIND_GRAPH


def test_lp_runs_free_with_no_hp_and_an_hp_attach_gates_it_before_the_reply(
    make_segment,  # noqa: ANN001
) -> None:
    """The engine's attached set on real segments: an LP program alone under hummingbird
    is ungated (nothing to protect); attaching an HP program sets it GATED at once (the
    HP's first launch may follow the reply), and its detach frees the LP again."""
    import os

    from hbtui.engine.attached import AttachedSet

    lp_seg, hp_seg = make_segment(L.CLASS_LP), make_segment(L.CLASS_HP)
    s = AttachedSet(lambda: "hummingbird")
    kw = {"launcher_pid": os.getpid(), "cmd": ["x"], "layout": L.VERSION, "slo_ms": None,
          "idle_ms": None, "taken": set()}  # fmt: skip
    try:
        lp = s.attach(task="train", cls="lp", shm=lp_seg.name, **kw).lp
        assert lp is not None and lp_seg.h.mode == L.MODE_PASS  # at once: no HP here
        s.poll()
        assert lp_seg.h.mode == L.MODE_PASS and not lp.slices.on
        s.attach(task="svc", cls="hp", shm=hp_seg.name, **kw)
        assert lp_seg.h.mode == L.MODE_GATED and lp.slices.on  # before any poll
        s.poll()
        assert lp_seg.h.mode == L.MODE_GATED
        s.detach(hp_seg.name)
        s.poll()
        assert lp_seg.h.mode == L.MODE_PASS
    finally:
        s.close()


def test_an_lp_attaching_beside_an_hp_starts_gated(make_segment) -> None:  # noqa: ANN001
    """The usual order, the service first and the training job later: the LP's first
    launch already waits for a grant."""
    import os

    from hbtui.engine.attached import AttachedSet

    lp_seg, hp_seg = make_segment(L.CLASS_LP), make_segment(L.CLASS_HP)
    s = AttachedSet(lambda: "hummingbird")
    kw = {"launcher_pid": os.getpid(), "cmd": ["x"], "layout": L.VERSION, "slo_ms": None,
          "idle_ms": None, "taken": set()}  # fmt: skip
    try:
        s.attach(task="svc", cls="hp", shm=hp_seg.name, **kw)
        s.attach(task="train", cls="lp", shm=lp_seg.name, **kw)
        assert lp_seg.h.mode == L.MODE_GATED  # before any poll
    finally:
        s.close()
