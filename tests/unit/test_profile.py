"""Profile loading, validation messages (file + key path) and atomic saves."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hbtui.engine import profile as prof_mod
from hbtui.engine.profile import ProfileError, list_profiles, load, parse, save, shipped_dir

GOOD = """
version = 1
[kernels.k]
grid = 264
block_us = 10.0
[[tasks]]
name = "svc"
class = "hp"
slo_ms = 2.0
arrival = { kind = "poisson", rate_hz = 100.0 }
kernels = [{ kernel = "k", gap_us = 5.0 }]
[[tasks]]
name = "bg"
class = "lp"
kernels = ["k"]
slice_us = 40.0
"""


def write(tmp_path: Path, text: str, name: str = "x.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", ["default", "bursty", "heavy-lp"])
def test_shipped_profiles_load(name: str) -> None:
    p = load(shipped_dir() / f"{name}.toml")
    assert any(t.cls == "hp" for t in p.tasks) and any(t.cls == "lp" for t in p.tasks)


@pytest.mark.parametrize(
    "old,new,where",
    [
        ("slo_ms = 2.0", "slo_ms = -2.0", "tasks[0].slo_ms: must be > 0"),
        ("slo_ms = 2.0", "slo_ms = nan", "tasks[0].slo_ms: must be finite"),
        ("version = 1", "version = 2", "version: unsupported version 2"),
        ('kernels = ["k"]', 'kernels = ["nope"]', "tasks[1].kernels[0]: unknown kernel 'nope'"),
        ('kernel = "k"', 'kernel = "zz"', "tasks[0].kernels[0].kernel: unknown kernel 'zz'"),
        ('kind = "poisson"', 'kind = "burst"', "tasks[0].arrival.kind: must be one of"),
        ("grid = 264", "grid = [0, 2]", "kernels.k.grid: must be a positive integer"),
        ("slice_us = 40.0", "slice_us = 40.0\nspeed = 3", "tasks[1].speed: unknown key"),
        ('class = "lp"', 'class = "mid"', "tasks[1].class: must be one of hp, lp"),
        ("slice_us = 40.0", 'slice_us = "fast"', "tasks[1].slice_us: must be a number"),
        (
            'kind = "poisson", rate_hz = 100.0',
            'kind = "trace", path = "nope.txt"',
            "tasks[0].arrival.path: cannot read trace",
        ),  # fmt: skip
    ],
)
def test_validation_names_file_and_key_path(tmp_path: Path, old: str, new: str, where: str) -> None:
    assert old in GOOD
    p = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ProfileError) as e:
        load(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ")
    assert where in msg


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="invalid TOML"):
        load(write(tmp_path, "version = = 1"))
    with pytest.raises(ProfileError, match="no such profile file"):
        load(tmp_path / "missing.toml")


def test_trace_arrivals_resolve_relative_to_the_profile(tmp_path: Path) -> None:
    (tmp_path / "arr.txt").write_text("0.0\n1.5\n3.0\n")
    p = load(write(tmp_path, GOOD.replace('kind = "poisson", rate_hz = 100.0',
                                           'kind = "trace", path = "arr.txt"')))  # fmt: skip
    assert p.tasks[0].arrival.times_ms == (0.0, 1.5, 3.0)


def test_save_round_trips_and_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = load(write(tmp_path, GOOD))
    out = tmp_path / "saved.toml"
    save(p, out)
    again = load(out)
    assert prof_mod.to_dict(again) == prof_mod.to_dict(p) | {"name": again.name}
    before = out.read_bytes()

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    p.tasks[1].slice_us = 99.0
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        save(p, out)
    assert out.read_bytes() == before  # the old file is untouched
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".saved")] == []


def test_user_profiles_shadow_shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    d = tmp_path / "hbtui" / "profiles"
    d.mkdir(parents=True)
    (d / "default.toml").write_text(GOOD)
    (d / "mine.toml").write_text(GOOD)
    found = {name: origin for name, _, origin in list_profiles()}
    assert found["default"] == "user" and found["mine"] == "user" and found["bursty"] == "shipped"
    assert prof_mod.resolve("mine") == d / "mine.toml"


def test_tasks_may_be_empty_but_must_be_an_array() -> None:
    assert parse({"version": 1}, "p.toml").tasks == []  # an engine for `hbtui run` only
    with pytest.raises(ProfileError, match="tasks: must be an array of tables"):
        parse({"version": 1, "tasks": {"a": 1}}, "p.toml")


def test_bench_cli_reports_profile_errors_without_traceback(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("slo_ms = 2.0", "slo_ms = 0"))
    r = subprocess.run([sys.executable, "-m", "hbtui", "bench", "--profile", str(p)],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip() == f"hbtui bench: error: {p}: tasks[0].slo_ms: must be > 0, got 0"
    assert "Traceback" not in r.stderr


def test_rates_and_traces_that_would_swamp_the_loop_are_refused(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("rate_hz = 100.0", "rate_hz = 2e9"))
    with pytest.raises(ProfileError, match=r"tasks\[0\].arrival.rate_hz: must be <= 5000 "):
        load(p)
    (tmp_path / "zero.txt").write_text("0\n")
    p = write(tmp_path, GOOD.replace('kind = "poisson", rate_hz = 100.0',
                                      'kind = "trace", path = "zero.txt"'))  # fmt: skip
    with pytest.raises(ProfileError, match="must span"):
        load(p)
