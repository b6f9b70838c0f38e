"""PTX slicer (CPU only): corpus kernels compiled with NVRTC, rewritten, assembled to
sm_90 cubins with nvJitLink; refusals, warnings, launch planning and the CLI."""

from __future__ import annotations

import functools
import itertools
import json
from pathlib import Path

import pytest

from hbtui.engine.slicer import (
    PARAM_NAMES,
    PtxParseError,
    UnknownKernelError,
    compile_cuda,
    full_grid_args,
    parse_module,
    plan_launches,
    ptx_to_cubin,
    slice_args,
    slice_ptx,
)
from hbtui.engine.slicer.cli import main as cli_main

CORPUS = Path(__file__).parents[1] / "slicer_corpus"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())
MODULES = {m["file"]: m for m in MANIFEST["modules"]}
ENTRIES = [(m["file"], e) for m in MANIFEST["modules"] for e in m["entries"]]


@functools.cache
def corpus_ptx(file: str) -> str:
    """PTX of a corpus module: NVRTC (compute_90) for .cu, the committed text for .ptx."""
    path = CORPUS / file
    if path.suffix == ".ptx":
        return path.read_text()
    return compile_cuda(
        path.read_text(), file, "compute_90", MODULES[file].get("nvrtc_options", [])
    )


def _entry_id(item: tuple[str, dict]) -> str:
    return f"{item[0]}:{item[1]['name']}"


@pytest.mark.parametrize("item", ENTRIES, ids=[_entry_id(i) for i in ENTRIES])
def test_corpus_verdicts(item: tuple[str, dict]) -> None:
    file, spec = item
    ptx = corpus_ptx(file)
    for allow in (False, True):
        res = slice_ptx(ptx, [spec["name"]], allow_clusters=allow)[spec["name"]]
        expect = spec.get("expect_allow_clusters", spec["expect"]) if allow else spec["expect"]
        assert res.status == expect, res.reason
        if res.status == "refused":
            assert spec["reason"] in res.reason
            assert res.redirected == ()
        else:
            assert res.reason is None
            assert sorted(res.redirected) == sorted(spec["redirected"])
            cluster = spec.get("cluster")
            assert res.cluster_alignment == (tuple(cluster) if cluster else None)
        if "warning" in spec:
            assert any(spec["warning"] in w for w in res.warnings), res.warnings
        elif res.status == "sliced":
            assert res.warnings == ()


ASSEMBLABLE = [m for m in MODULES if not MODULES[m].get("needs_cudadevrt")]


@pytest.mark.parametrize("file", ASSEMBLABLE)
@pytest.mark.parametrize("allow_clusters", [False, True])
def test_rewritten_module_assembles_for_sm90(file: str, allow_clusters: bool) -> None:
    ptx = corpus_ptx(file)
    result = slice_ptx(ptx, allow_clusters=allow_clusters)
    cubin = ptx_to_cubin(result.ptx)
    assert cubin[:4] == b"\x7fELF"


def test_device_launch_module_needs_cudadevrt_to_link() -> None:
    # Why it is not in the assembly test: the CDP2 runtime symbols live in libcudadevrt,
    # which no wheel here ships. The sliced `child` entry is still checked by parse below.
    result = slice_ptx(corpus_ptx("device_launch.cu"))
    with pytest.raises(Exception, match="cudaCDP2"):
        ptx_to_cubin(result.ptx)
    child = next(f for f in parse_module(result.ptx).entries() if f.name == "child")
    assert [p.name for p in child.params][-6:] == list(PARAM_NAMES)


@pytest.mark.parametrize("file", list(MODULES))
def test_rewrite_shape(file: str) -> None:
    """Sliced entries get the 6 params at the end and read %ctaid only in the prologue;
    refused entries are byte-identical to the input."""
    ptx = corpus_ptx(file)
    before = {f.name: f for f in parse_module(ptx).entries()}
    result = slice_ptx(ptx, allow_clusters=True)
    after = {f.name: f for f in parse_module(result.ptx).entries()}
    assert before.keys() == after.keys()
    for e in result.entries:
        old, new = before[e.name], after[e.name]
        if not e.sliced:
            assert (
                ptx[old.name_token.start : old.body_close.end]
                == result.ptx[new.name_token.start : new.body_close.end]
            )
            continue
        assert [p.name for p in new.params] == [p.name for p in old.params] + list(PARAM_NAMES)
        assert all(".u32" in [t.text for t in p.tokens] for p in new.params[-6:])
        reads = [
            (st.opcode, t.text)
            for st in new.statements
            for t in st.operands
            if t.text.split(".")[0] in ("%ctaid", "%nctaid", "%clusterid", "%nclusterid")
        ]
        # Only the prologue's `mov.u32 %__hbt_ctaid_x, %ctaid.x` style reads remain.
        assert all(op == "mov.u32" for op, _ in reads)
        assert sorted(r for _, r in reads) == sorted(
            r for r in e.redirected if r.split(".")[0] in ("%ctaid", "%clusterid")
        )


EDGE_PTX = r"""
//
// Hand-written edge cases: comments and strings that mention %ctaid, block comments,
// .func with return params, an aggregate by-value param, scopes, %ctaid.y read by
// `cvt` (ptxas allows special registers only in mov/cvt), predicated reads, a prototype.
//
.version 8.0
.target sm_90
.address_size 64

.file 1 "edge.cu, .entry fake(.param .u64 x) { mov.u32 %r1, %ctaid.x; }"
.global .align 4 .b8 table[8] = {1, 2, 3, 4, 5, 6, 7, 8};
.extern .func (.param .b32 ret) ext_proto (.param .b32 a);

.func (.param .b32 fr) pure_add(.param .b32 a, .param .b32 b)
{
	.reg .b32 %r<4>;
	ld.param.b32 %r1, [a];
	ld.param.b32 %r2, [b];
	add.s32 %r3, %r1, %r2;
	st.param.b32 [fr], %r3;
	ret;
}

/* .entry commented_out(.param .u32 p) { mov.u32 %r1, %ctaid.x; } */
.visible .entry edge(
	.param .u64 .ptr .global .align 16 edge_param_0, // trailing comment, %ctaid.x here
	.param .align 8 .b8 edge_param_1[24]
)
.maxntid 256, 1, 1
.minnctapersm 1
{
	.reg .pred %p<2>;
	.reg .b32 %r<12>;
	.reg .b64 %rd<4>;
	ld.param.u64 %rd1, [edge_param_0];
	ld.param.u32 %r9, [edge_param_1+16];
	cvta.to.global.u64 %rd2, %rd1;
	cvt.u64.u32 %rd3, %ctaid.y;          // %ctaid.y read by cvt, not mov
	cvt.u32.u64 %r1, %rd3;
	mov.u32 %r2, %nctaid.x; /* %nctaid.z in a comment */
	setp.eq.u32 %p1, %r1, %r2;
	{
		.reg .b32 %inner;
		@!%p1 mov.u32 %inner, %ctaid.x;
		@%p1 mov.u32 %inner, 0;
		add.u32 %r3, %inner, %r9;
	}
	{ // callseq 0, 0
	.param .b32 param0;
	st.param.b32 [param0], %r3;
	.param .b32 param1;
	st.param.b32 [param1], %r2;
	.param .b32 retval0;
	call.uni (retval0),
	pure_add,
	(
	param0,
	param1
	);
	ld.param.b32 %r4, [retval0];
	} // callseq 0
	mul.wide.u32 %rd3, %r4, 4;
	add.s64 %rd3, %rd2, %rd3;
	st.global.u32 [%rd3], %r4;
	ret;
}

.visible .entry no_params()
.reqntid 32
{
	.reg .b32 %r<2>;
	mov.u32 %r1, %ctaid.x;
	ret;
}
"""


def test_edge_cases_parse_rewrite_and_assemble() -> None:
    ptx_to_cubin(EDGE_PTX)  # the fixture itself is valid PTX
    result = slice_ptx(EDGE_PTX)
    assert [(e.name, e.status) for e in result.entries] == [
        ("edge", "sliced"),
        ("no_params", "sliced"),
    ]
    assert result["edge"].redirected == ("%ctaid.x", "%ctaid.y", "%nctaid.x")
    out = result.ptx
    assert "// trailing comment, %ctaid.x here" in out  # comments untouched
    assert "/* %nctaid.z in a comment */" in out
    assert '.file 1 "edge.cu, .entry fake(.param .u64 x) { mov.u32 %r1, %ctaid.x; }"' in out
    assert "cvt.u64.u32 %rd3, %__hbt_ctaid_y;" in out
    assert "@!%p1 mov.u32 %inner, %__hbt_ctaid_x;" in out
    no_params = next(f for f in parse_module(out).entries() if f.name == "no_params")
    assert [p.name for p in no_params.params] == list(PARAM_NAMES)
    assert ptx_to_cubin(out)[:4] == b"\x7fELF"


def _module(body: str, header: str = "", funcs: str = "") -> str:
    return (
        ".version 8.0\n.target sm_90\n.address_size 64\n"
        + funcs
        + f"\n.visible .entry k(.param .u64 p)\n{header}\n{{\n{body}\n}}\n"
    )


@pytest.mark.parametrize(
    ("funcs", "body", "reason"),
    [
        (  # pre-CUDA-11 cooperative groups ABI
            ".extern .func (.param .b32 r) cudaCGSynchronizeGrid (.param .b64 h, .param .b32 f);",
            ".reg .b32 %r1; { .param .b64 h; .param .b32 f; .param .b32 r;\n"
            "call.uni (r), cudaCGSynchronizeGrid, (h, f); }",
            "grid-wide sync: calls cudaCGSynchronizeGrid",
        ),
        (  # CDP1 name
            ".extern .func (.param .b32 r) cudaLaunchDeviceV2 (.param .b64 a, .param .b64 s);",
            "{ .param .b64 a; .param .b64 s; .param .b32 r;\n"
            "call.uni (r), cudaLaunchDeviceV2, (a, s); }",
            "device-side launch",
        ),
        ("", ".reg .b32 %r1; mov.u32 %r1, %envreg3;", "%envreg3"),
        ("", ".reg .b32 %r1; mov.u32 %r1, %cluster_nctarank;", "thread-block clusters"),
        ("", ".reg .b16 %h1; mov.u16 %h1, %ctaid.x;", "16-bit read"),
        (  # .func reached only through an indirect call
            ".func (.param .b32 r) bid() { .reg .b32 %r1; mov.u32 %r1, %ctaid.x;"
            " st.param.b32 [r], %r1; ret; }\n.global .u64 fp;",
            ".reg .b64 %rd1; mov.u64 %rd1, bid; proto: .callprototype (.param .b32 _) _ ();\n"
            "{ .param .b32 r; call (r), %rd1, (), proto; }",
            "calls .func bid",
        ),
    ],
)
def test_refusals(funcs: str, body: str, reason: str) -> None:
    res = slice_ptx(_module(body, funcs=funcs))["k"]
    assert res.status == "refused"
    assert reason in res.reason
    assert "k" in res.name


def test_explicit_cluster_without_shape_is_refused_even_when_allowed() -> None:
    ptx = _module("ret;", header=".explicitcluster")
    res = slice_ptx(ptx, allow_clusters=True)["k"]
    assert res.status == "refused" and "chosen at launch time" in res.reason


def test_warnings_for_gridid_and_external_calls() -> None:
    funcs = ".extern .func (.param .b32 r) mystery (.param .b32 a);"
    body = (
        ".reg .b32 %r<3>; mov.u32 %r1, %gridid;\n"
        "{ .param .b32 a; .param .b32 r; st.param.b32 [a], %r1;\n"
        "call.uni (r), mystery, (a); }"
    )
    res = slice_ptx(_module(body, funcs=funcs))["k"]
    assert res.status == "sliced"
    assert any("%gridid" in w for w in res.warnings)
    assert any("external function mystery" in w for w in res.warnings)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (".version 8.0\n.target sm_90\n.entry k() { ret; ", "line"),
        (".version 8.0\n.target sm_90\n/* never closed", "unterminated"),
        (".version 8.0\n.entry k() { ret; }", "no .target"),
        (".version 8.0\n.target sm_90\n.entry k() { mov.u32 %r1, 1 }", "not terminated"),
        ("\x00\x01binary", "unexpected character"),
        (".version 8.0\n.target sm_90\n.entry k() ) {}", "unexpected"),
        (".version 8.0\n.target sm_90\n.global .u32 x = {1, 2;", "unclosed"),
        (".version 8.0\n.target sm_90\n.global .u32 x = {1, 2];", "unbalanced"),
    ],
)
def test_parse_errors(text: str, needle: str) -> None:
    with pytest.raises(PtxParseError, match=needle):
        slice_ptx(text)


def test_unknown_kernel_and_selection() -> None:
    ptx = corpus_ptx("multi_entry.cu")
    with pytest.raises(UnknownKernelError, match="nope"):
        slice_ptx(ptx, ["nope"])
    res = slice_ptx(ptx, ["scale"])
    assert [e.name for e in res.entries] == ["scale"]
    entries = {f.name: f for f in parse_module(res.ptx).entries()}
    assert len(entries["blend2d"].params) == 5  # unselected entries are not rewritten


def test_name_collision_picks_another_prefix() -> None:
    body = ".reg .b32 %__hbt_ctaid_x; mov.u32 %__hbt_ctaid_x, %ctaid.x;"
    res = slice_ptx(_module(body))
    assert "%__hbt1_ctaid_x" in res.ptx
    assert ".param .u32 __hbt1_off_x" in res.ptx
    ptx_to_cubin(res.ptx)


# ---- launch planning -------------------------------------------------------------


def _blocks(launch, grid):
    (ox, oy, oz), (sx, sy, sz) = launch.offset, launch.grid
    gx, gy, gz = grid
    out = []
    for z, y, x in itertools.product(range(sz), range(sy), range(sx)):
        bx, by, bz = ox + x, oy + y, oz + z
        assert bx < gx and by < gy and bz < gz, (launch, grid)
        out.append(bx + gx * (by + gy * bz))
    return out


GRIDS = [(x, y, z) for x in range(1, 5) for y in range(1, 5) for z in range(1, 4)]


@pytest.mark.parametrize("grid", GRIDS, ids=["x".join(map(str, g)) for g in GRIDS])
def test_plan_launches_exhaustive(grid: tuple[int, int, int]) -> None:
    total = grid[0] * grid[1] * grid[2]
    limit = 3 if grid[2] == 1 else 5
    for start in range(total + 1):
        for end in range(start, total + 1):
            launches = plan_launches(start, end, grid)
            assert len(launches) <= limit
            covered = []
            for ln in launches:
                assert min(ln.grid) >= 1
                ids = _blocks(ln, grid)
                assert ids == list(range(ids[0], ids[0] + len(ids)))  # contiguous box
                assert ln.blocks == len(ids)
                covered += ids
            assert covered == list(range(start, end))  # exactly once, in order, no extras


@pytest.mark.parametrize(("grid", "cluster"), [((4, 2, 2), (2, 1, 1)), ((6, 4, 1), (2, 2, 1))])
def test_plan_launches_cluster_aligned(grid, cluster) -> None:
    cg = [g // c for g, c in zip(grid, cluster, strict=True)]
    nclusters = cg[0] * cg[1] * cg[2]
    for start in range(nclusters + 1):
        for end in range(start, nclusters + 1):
            covered = set()
            for ln in plan_launches(start, end, grid, cluster):
                assert all(o % c == 0 for o, c in zip(ln.offset, cluster, strict=True))
                assert all(s % c == 0 for s, c in zip(ln.grid, cluster, strict=True))
                ids = _blocks(ln, grid)
                assert covered.isdisjoint(ids)
                covered.update(ids)
            want = set()
            for cid in range(start, end):
                cx, cy, cz = cid % cg[0], (cid // cg[0]) % cg[1], cid // (cg[0] * cg[1])
                for z, y, x in itertools.product(
                    range(cluster[2]), range(cluster[1]), range(cluster[0])
                ):
                    bx, by, bz = cx * cluster[0] + x, cy * cluster[1] + y, cz * cluster[2] + z
                    want.add(bx + grid[0] * (by + grid[1] * bz))
            assert covered == want


def test_plan_launches_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        plan_launches(0, 5, (2, 2, 1))
    with pytest.raises(ValueError):
        plan_launches(2, 1, (4, 1, 1))
    with pytest.raises(ValueError):
        plan_launches(0, 1, (3, 1, 1), (2, 1, 1))
    with pytest.raises(ValueError):
        plan_launches(0, 1, (0, 1, 1))


def test_slice_args() -> None:
    (launch,) = plan_launches(5, 7, (4, 3))
    assert launch.offset == (1, 1, 0) and launch.grid == (2, 1, 1)
    assert slice_args(launch, (4, 3)) == (1, 1, 0, 4, 3, 1)
    assert full_grid_args((7,)) == (0, 0, 0, 7, 1, 1)


# ---- CLI ---------------------------------------------------------------------------


def test_cli_slices_ptx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.ptx"
    rc = cli_main([str(CORPUS / "triton_add2d.ptx"), "-o", str(out)])
    assert rc == 0
    assert capsys.readouterr().out.strip() == "add2d_kernel: sliced"
    ptx_to_cubin(out.read_text())


def test_cli_cu_input_with_refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.ptx"
    rc = cli_main([str(CORPUS / "multi_entry.cu"), "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 1
    assert "scale: sliced" in text and "blend2d: sliced" in text
    assert "tag_blocks: refused: calls .func" in text
    assert out.exists()  # written anyway; refused entries unchanged
    assert cli_main([str(CORPUS / "multi_entry.cu"), "--kernel", "scale"]) == 0


def test_cli_warnings_and_clusters(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main([str(CORPUS / "smid.cu")]) == 0
    assert "where_run: warning: reads %smid" in capsys.readouterr().out
    assert cli_main([str(CORPUS / "cluster.cu")]) == 1
    assert cli_main([str(CORPUS / "cluster.cu"), "--allow-clusters"]) == 0
    assert "aligned to 2x1x1 clusters" in capsys.readouterr().out


def test_cli_stdout_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main([str(CORPUS / "vector_add.cu"), "-o", "-"]) == 0
    captured = capsys.readouterr()
    assert "__hbt_grid_z" in captured.out
    assert captured.err.strip() == "vadd: sliced"


@pytest.mark.parametrize(
    ("make_args", "needle"),
    [
        (lambda d: [str(d / "missing.ptx")], "cannot read"),
        (lambda d: [str(CORPUS / "vector_add.cu"), "--kernel", "nope"], "no entry named 'nope'"),
        (lambda d: [str(d / "bad.ptx")], "line"),
        (lambda d: [str(d / "bad.cu")], "NVRTC failed"),
        (lambda d: [str(d / "bin.ptx")], "cannot read"),
        (lambda d: ["--frobnicate"], "error"),
    ],
)
def test_cli_errors_exit_2(tmp_path: Path, capsys, make_args, needle: str) -> None:
    (tmp_path / "bad.ptx").write_text(".version 8.0\n.target sm_90\n.entry k( {")
    (tmp_path / "bad.cu").write_text("__global__ void k() { this is not C }")
    (tmp_path / "bin.ptx").write_bytes(b"\xff\xfe\x00garbage")
    assert cli_main(make_args(tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err
    assert "Traceback" not in err


LAUNCHABLE = [(f, e) for f, e in ENTRIES if "launch" in e]


@pytest.mark.parametrize("item", LAUNCHABLE, ids=[_entry_id(i) for i in LAUNCHABLE])
def test_manifest_launch_args_match_ptx_params(item: tuple[str, dict]) -> None:
    """The GPU test packs args from the manifest: check count and sizes against the PTX."""
    file, spec = item
    fn = next(f for f in parse_module(corpus_ptx(file)).entries() if f.name == spec["name"])
    assert len(fn.params) == len(spec["launch"]["args"])
    for param, arg in zip(fn.params, spec["launch"]["args"], strict=True):
        ptype = next(t.text for t in param.tokens if t.text[1:2] in "usbf" and t.text[2:].isdigit())
        bits = 64 if "buf" in arg or arg["scalar"] == "uint64" else 32
        assert int(ptype[2:]) == bits, (param.name, arg)
    g, b = spec["launch"]["grid"], spec["launch"]["block"]
    assert len(g) == 3 and len(b) == 3 and b[0] * b[1] * b[2] <= 1024
