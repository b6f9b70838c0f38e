"""The ``hbtui`` command: the console by default, plus engine-side subcommands.

``hbtui [--profile P] [--readonly]``  open the console on an embedded engine
``hbtui connect ENDPOINT...``         open the console on running headless engines
``hbtui engine ...``                  run a headless engine (ZeroMQ telemetry + control)
``hbtui bench ...``                   compare policies on identical arrivals
``hbtui slice IN.ptx ...``            make a PTX module sliceable
``hbtui keys generate ...``           CURVE keys for non-loopback engines
``hbtui --help`` / ``--version``      every subcommand with one line (hbtui.cli) / the version

Subcommands are imported lazily so ``hbtui bench`` never loads Textual.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    cmd = args[0] if args else ""
    rest = args[1:]
    if cmd == "bench":
        from hbtui.engine.cli import bench_main

        return bench_main(rest)
    if cmd == "engine":
        from hbtui.engine.server import main as engine_main

        return engine_main(rest)
    if cmd == "slice":
        from hbtui.engine.slicer.cli import main as slice_main

        return slice_main(rest)
    if cmd == "run":
        from hbtui.attach.launcher import main as run_main

        return run_main(rest)
    if cmd == "keys":
        from hbtui.engine.keys import main as keys_main

        return keys_main(rest)
    from hbtui.cli import run as console_main

    return console_main(args)


if __name__ == "__main__":
    sys.exit(main())
