"""deploy/systemd: the template unit passes systemd-analyze verify (where systemd is
installed) and carries the hardening; the start script derives the ports from the GPU."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SD = ROOT / "deploy" / "systemd"
UNIT = SD / "hbtui-engine@.service"
START = SD / "hbtui-engine-start"
INSTALLED = "/usr/local/lib/hbtui/hbtui-engine-start"


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z]+)=(.*)$", line)
        if m:
            out.setdefault(m.group(1), []).append(m.group(2))
    return out


def test_unit_is_a_hardened_template_that_restarts_and_logs_to_the_journal() -> None:
    d = directives(UNIT.read_text())
    assert d["ExecStart"] == [INSTALLED]
    assert "HBTUI_DEVICE=%i" in d["Environment"]
    assert d["EnvironmentFile"] == ["-/etc/hbtui/engine.env", "-/etc/hbtui/engine-%i.env"]
    for key, want in {"DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                      "ProtectHome": "yes", "PrivateTmp": "yes", "Restart": "on-failure",
                      "StandardError": "journal", "KillSignal": "SIGTERM"}.items():  # fmt: skip
        assert d[key] == [want], key
    assert d["CapabilityBoundingSet"] == [""]
    assert d["WantedBy"] == ["multi-user.target"]
    curve = directives((SD / "curve.conf").read_text())
    assert curve["LoadCredential"] == ["hbtui-keys:/etc/hbtui/keys"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at the repository's start script
    unit = tmp_path / "hbtui-engine@.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED, str(START)))
    r = subprocess.run(["systemd-analyze", "verify", f"{tmp_path}/hbtui-engine@3.service"],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stderr


def _start(tmp_path: Path, env: dict[str, str]) -> list[str]:
    """The engine command line the start script execs (a stub records it)."""
    stub = tmp_path / "hbtui"
    stub.write_text(f"#!{sys.executable}\nimport sys, json\nprint(json.dumps(sys.argv[1:]))\n")
    stub.chmod(0o755)
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HBTUI_BIN": str(stub)}
    r = subprocess.run(["sh", str(START)], env={**base, **env}, capture_output=True,
                       text=True, timeout=10)  # fmt: skip
    assert r.returncode == 0, r.stderr
    import json

    return json.loads(r.stdout)


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_start_script_derives_ports_from_the_gpu_index(tmp_path: Path) -> None:
    argv = _start(tmp_path, {"HBTUI_DEVICE": "2"})
    assert argv[:3] == ["engine", "--device", "2"]
    assert _flag(argv, "--pub") == "tcp://127.0.0.1:5575"
    assert _flag(argv, "--ctl") == "tcp://127.0.0.1:5576"
    assert _flag(argv, "--metrics") == "127.0.0.1:9402"
    assert _flag(argv, "--profile") == "default" and "--curve-secret" not in argv


def test_start_script_takes_the_env_file_and_the_credentials(tmp_path: Path) -> None:
    keys = tmp_path / "creds" / "hbtui-keys"
    keys.mkdir(parents=True)
    for f in ("server.key_secret", "server.key", "alice.key", "bob.key"):
        (keys / f).write_text("x")
    argv = _start(tmp_path, {"HBTUI_DEVICE": "0", "HBTUI_BIND": "0.0.0.0",
                             "HBTUI_METRICS": "0.0.0.0:9500", "HBTUI_PROFILE": "bursty",
                             "HBTUI_ARGS": "--calibrate 2 --readonly",
                             "CREDENTIALS_DIRECTORY": str(tmp_path / "creds")})  # fmt: skip
    assert _flag(argv, "--pub") == "tcp://0.0.0.0:5555"
    assert _flag(argv, "--metrics") == "0.0.0.0:9500" and _flag(argv, "--profile") == "bursty"
    assert _flag(argv, "--curve-secret") == str(keys / "server.key_secret")
    i = argv.index("--curve-allow")
    assert argv[i + 1 : i + 3] == [str(keys / k) for k in ("alice.key", "bob.key")]
    assert argv[i + 3] == "--calibrate"  # the server's own public key is no client
    assert argv[-3:] == ["--calibrate", "2", "--readonly"]


def test_start_script_refuses_a_bad_gpu_index(tmp_path: Path) -> None:
    r = subprocess.run(["sh", str(START)], env={"HBTUI_DEVICE": "1;rm", "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True, timeout=10)  # fmt: skip
    assert r.returncode == 2 and "not a number" in r.stderr
