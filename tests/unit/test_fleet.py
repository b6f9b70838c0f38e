"""Fleet files (hbtui.fleet) and the ``hbtui connect --fleet`` hook."""

from __future__ import annotations

from pathlib import Path

import pytest

from hbtui import cli
from hbtui.fleet import FleetEngine, FleetError, load, parse

FLEET = """
curve_secret = "keys/client.key_secret"
server_key = "keys/server.key"

[[hosts]]
name = "node-a"
address = "10.0.0.5"
gpus = [0, 3]

[[hosts]]
name = "node-b"
server_key = "/etc/hbtui/node-b.key"

[[engines]]
name = "lab/a100"
ctl = "tcp://lab:7001"

[[engines]]
name = "local"
ctl = "ipc:///run/hbtui/ctl"
pub = "ipc:///run/hbtui/pub"
"""


def test_hosts_expand_to_one_engine_per_gpu_on_the_conventional_ports() -> None:
    base = Path("/srv/fleet")
    got = parse(FLEET, base)
    sec, srv = base / "keys/client.key_secret", base / "keys/server.key"
    assert got == [
        FleetEngine("node-a/gpu0", "tcp://10.0.0.5:5556", "tcp://10.0.0.5:5555", sec, srv),
        FleetEngine("node-a/gpu3", "tcp://10.0.0.5:5586", "tcp://10.0.0.5:5585", sec, srv),
        FleetEngine("node-b/gpu0", "tcp://node-b:5556", "tcp://node-b:5555", sec,
                    Path("/etc/hbtui/node-b.key")),
        FleetEngine("lab/a100", "tcp://lab:7001", "tcp://lab:7000", sec, srv),
        FleetEngine("local", "ipc:///run/hbtui/ctl", "ipc:///run/hbtui/pub", sec, srv),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "no [[hosts]] or [[engines]]"),
        ("[[hosts]]\nname = 'a'\ngpus = [0]\nport = 1\n", "hosts[0]: unknown key 'port'"),
        ("[[hosts]]\ngpus = [0]\n", "hosts[0]: name is required"),
        ("[[hosts]]\nname = 'a'\ngpus = [64]\n", "gpus must be a non-empty list"),
        ("[[hosts]]\nname = 'a'\ngpus = []\n", "gpus must be a non-empty list"),
        ("[[hosts]]\nname = 'a'\ngpus = [true]\n", "gpus must be a non-empty list"),
        ("[[hosts]]\nname = 'a b'\n", "name 'a b'"),
        ("[[hosts]]\nname = 'a'\naddress = 'x;y'\n", "is not a host name"),
        ("[[engines]]\nname = 'e'\n", "engines[0]: ctl is required"),
        ("[[engines]]\nname = 'e'\nctl = 'http://x'\n", "not a tcp:// or ipc://"),
        ("[[engines]]\nname = 'e'\nctl = 'ipc:///x/sock'\n", "cannot derive a pub"),
        ("[[hosts]]\nname = 'a'\ncurve_secret = 'k'\n", "needs both curve_secret and server_key"),
        ("[[hosts]]\nname = 'a'\n[[hosts]]\nname = 'a'\n", "'a/gpu0' appears twice"),
        ("hosts = 3\n", "hosts must be an array of tables"),
        ("[[hosts]\n", "not valid TOML"),
    ],
)
def test_bad_fleet_files_say_what_is_wrong(text: str, error: str) -> None:
    with pytest.raises(FleetError) as e:
        parse(text, Path("/x"), "f.toml")
    assert error in str(e.value) and str(e.value).startswith("f.toml")


def test_load_resolves_keys_next_to_the_file_and_reports_a_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "fleet.toml"
    p.write_text(FLEET)
    assert load(p)[0].curve_secret == tmp_path / "keys" / "client.key_secret"
    with pytest.raises(FleetError, match="cannot read fleet file"):
        load(tmp_path / "missing.toml")


def test_connect_fleet_makes_one_target_per_engine_with_its_keys(tmp_path: Path) -> None:
    from hbtui.engine.keys import main as keys_main

    assert keys_main(["generate", "--dir", str(tmp_path / "keys")]) == 0
    (tmp_path / "fleet.toml").write_text(FLEET.replace('"/etc/hbtui/node-b.key"',
                                                       '"keys/server.key"'))  # fmt: skip
    args = cli.parse_args(["connect", "--fleet", str(tmp_path / "fleet.toml")])
    targets = cli.targets_from(args)
    assert [t.ctl for t in targets] == [
        "tcp://10.0.0.5:5556", "tcp://10.0.0.5:5586", "tcp://node-b:5556",
        "tcp://lab:7001", "ipc:///run/hbtui/ctl",
    ]  # fmt: skip
    assert all(t.curve is not None for t in targets)
    assert targets[0].tab_name == "node-a/gpu0" and targets[3].tab_name == "lab/a100"
    # endpoints on the command line come first, then the fleet's
    args = cli.parse_args(["connect", "tcp://x:5556", "--fleet", str(tmp_path / "fleet.toml")])
    assert [t.ctl for t in cli.targets_from(args)][:2] == ["tcp://x:5556", "tcp://10.0.0.5:5556"]


def test_connect_fleet_errors_are_one_line_and_exit_2(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    (tmp_path / "f.toml").write_text("[[hosts]]\nname = 'a'\ngpus = ['x']\n")
    assert cli.run(["connect", "--fleet", str(tmp_path / "f.toml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hbtui connect: error: ") and "gpus must be" in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "spec,what",
    [("tcp://*:5556", "control endpoint 'tcp://*:5556'"),
     ("tcp://127.0.0.1:5556,tcp://*:5555", "telemetry endpoint 'tcp://*:5555'"),
     ("foo://gpu1:5556,tcp://gpu1:5555", "control endpoint 'foo://gpu1:5556'")],
)  # fmt: skip
def test_connect_refuses_an_endpoint_zeromq_cannot_connect_to_before_the_console(
    spec: str,
    what: str,
    capsys,  # noqa: ANN001
) -> None:
    """A wildcard host (only binds take one) or an unknown transport: said on one line
    with exit 2, before the console starts (it used to open the console and end it in
    the link's worker)."""
    assert cli.run(["connect", spec]) == 2
    err = capsys.readouterr().err
    assert what in err and len(err.strip().splitlines()) == 1, err
