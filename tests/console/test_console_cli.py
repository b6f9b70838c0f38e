"""The hbtui command line: help, version, did-you-mean, checked flags, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hbtui.__main__ import main
from hbtui.cli import SUBCOMMANDS, _run_app, check_profile


def hbtui(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hbtui", *args], capture_output=True, text=True,
                          timeout=30)  # fmt: skip


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in ("connect", "engine", "bench", "slice", "keys", "run"):
        assert name in SUBCOMMANDS
        assert any(line.split()[:1] == [name] for line in out.splitlines()), name
    assert "(none)" in out  # the default: the console on an embedded engine


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("hbtui ")


@pytest.mark.parametrize(
    ("argv", "suggestion"),
    [(["--profle", "x"], "--profile"), (["--readnly"], "--readonly"), (["conect"], "connect")],
)
def test_typos_get_did_you_mean(argv, suggestion, capsys) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert f"did you mean {suggestion}?" in capsys.readouterr().err


@pytest.mark.parametrize("rate", ["0", "-1", "1000", "nan", "fast"])
def test_bad_rate_is_one_line_and_exit_2(rate: str) -> None:
    r = hbtui("--rate", rate, "--profile", "default")
    assert r.returncode == 2
    assert "refresh rate" in r.stderr and "Traceback" not in r.stderr


def test_unknown_profile_fails_before_the_console_opens() -> None:
    r = hbtui("--profile", "defualt")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1
    assert "did you mean default?" in err and "available:" in err and "bursty" in err


def test_check_profile_gives_the_description() -> None:
    path, desc = check_profile("default")
    assert path.endswith("default.toml") and "HP" in desc


def test_an_error_that_ends_the_console_is_one_line_and_exit_1(capsys, tmp_path, monkeypatch):  # noqa: ANN001
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))

    class Boom:
        fatal = None
        return_code = 0

        def run(self) -> None:
            self.fatal = "OverflowError: int too big to convert (traceback in /x)"
            self.return_code = 1

    assert _run_app(Boom()) == 1
    err = capsys.readouterr().err
    assert err == "hbtui: error: OverflowError: int too big to convert (traceback in /x)\n"
