"""`hbtui slice IN.ptx|IN.cu [-o OUT.ptx] [--kernel NAME]...`

Exit codes: 0 every requested kernel was sliced, 1 some were refused (OUT is still
written, refused kernels unchanged), 2 unreadable input, parse/compile error or unknown
--kernel. Without -o only the report is printed; `-o -` writes the PTX to stdout and
the report to stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .lexer import PtxParseError
from .rewrite import SliceResult, UnknownKernelError, slice_ptx
from .toolchain import ToolchainError, compile_cuda


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise _UsageError(message)


class _UsageError(Exception):
    pass


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="hbtui slice",
        description="Make CUDA kernels sliceable (see docs/slicer.md).",
    )
    p.add_argument("input", help="PTX file, or CUDA C (.cu) compiled with NVRTC for sm_90")
    p.add_argument("-o", "--output", help="write the sliceable PTX here ('-' for stdout)")
    p.add_argument(
        "--kernel",
        action="append",
        dest="kernels",
        metavar="NAME",
        help="slice only this entry (repeatable; default: all entries)",
    )
    p.add_argument(
        "--allow-clusters",
        action="store_true",
        help="accept sm_90 cluster kernels; slices must then be cluster-aligned",
    )
    p.add_argument(
        "--nvrtc-opt",
        action="append",
        default=[],
        metavar="OPT",
        help="extra NVRTC option for .cu input (repeatable), e.g. -rdc=true",
    )
    return p


def _load(path: Path, nvrtc_opts: list[str]) -> str:
    if path.suffix == ".cu":
        return compile_cuda(path.read_text(), path.name, "compute_90", nvrtc_opts)
    return path.read_text()


def _report(result: SliceResult, out) -> None:
    for e in result.entries:
        if e.sliced:
            extra = ""
            if e.cluster_alignment:
                dims = "x".join(map(str, e.cluster_alignment))
                extra = f" (slices must be aligned to {dims} clusters)"
            print(f"{e.name}: sliced{extra}", file=out)
        else:
            print(f"{e.name}: refused: {e.reason}", file=out)
        for w in e.warnings:
            print(f"{e.name}: warning: {w}", file=out)


def main(argv: list[str] | None = None) -> int:
    try:
        args = _build_parser().parse_args(argv)
    except _UsageError as exc:
        print(f"hbtui slice: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    path = Path(args.input)
    try:
        ptx = _load(path, args.nvrtc_opt)
        result = slice_ptx(ptx, args.kernels, allow_clusters=args.allow_clusters)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"hbtui slice: error: cannot read {path}: {exc}", file=sys.stderr)
        return 2
    except ToolchainError as exc:
        first = str(exc).strip().splitlines()
        print(f"hbtui slice: error: {' | '.join(first[:4])}", file=sys.stderr)
        return 2
    except PtxParseError as exc:
        print(f"hbtui slice: error: {path}: {exc}", file=sys.stderr)
        return 2
    except UnknownKernelError as exc:
        print(f"hbtui slice: error: {exc}", file=sys.stderr)
        return 2
    report_to = sys.stderr if args.output == "-" else sys.stdout
    if args.output == "-":
        sys.stdout.write(result.ptx)
    elif args.output:
        try:
            Path(args.output).write_text(result.ptx)
        except OSError as exc:
            print(f"hbtui slice: error: cannot write {args.output}: {exc}", file=sys.stderr)
            return 2
    _report(result, report_to)
    return 0 if result.all_sliced else 1


if __name__ == "__main__":
    sys.exit(main())
