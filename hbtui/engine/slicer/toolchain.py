"""NVRTC (CUDA C -> PTX) and nvJitLink (PTX -> cubin); both work without a GPU."""

from __future__ import annotations

from collections.abc import Sequence


class ToolchainError(RuntimeError):
    """A compile or link failed; the message carries the tool's log."""


def compile_cuda(
    source: str,
    name: str = "kernel.cu",
    arch: str = "compute_90",
    options: Sequence[str] = (),
) -> str:
    """Compile CUDA C with NVRTC to PTX text."""
    from cuda.bindings import nvrtc

    err, prog = nvrtc.nvrtcCreateProgram(source.encode(), name.encode(), 0, [], [])
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise ToolchainError(f"nvrtcCreateProgram: {err}")
    try:
        opts = [f"--gpu-architecture={arch}".encode(), *(o.encode() for o in options)]
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        _, size = nvrtc.nvrtcGetProgramLogSize(prog)
        log = bytearray(size)  # not b" " * size: a 1-byte bytes object is shared
        nvrtc.nvrtcGetProgramLog(prog, log)
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            text = log.rstrip(b"\0").decode(errors="replace").strip()
            raise ToolchainError(f"NVRTC failed to compile {name}:\n{text}")
        _, size = nvrtc.nvrtcGetPTXSize(prog)
        ptx = bytearray(size)
        nvrtc.nvrtcGetPTX(prog, ptx)
        return bytes(ptx).rstrip(b"\0").decode()
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def ptx_arch(ptx: str) -> str:
    """The sm_ arch named by the module's `.target` (e.g. sm_90a for Triton on Hopper)."""
    for line in ptx.splitlines():
        words = line.split("//")[0].replace(",", " ").split()
        if words[:1] == [".target"]:
            for w in words[1:]:
                if w.startswith("sm_"):
                    return w
    return "sm_90"


def ptx_to_cubin(ptx: str, arch: str | None = None) -> bytes:
    """Assemble PTX to a cubin with nvJitLink (arch defaults to the module's target)."""
    from cuda.bindings import nvjitlink

    arch = arch or ptx_arch(ptx)
    handle = nvjitlink.create(1, [f"-arch={arch}"])
    try:
        data = ptx.encode()
        try:
            nvjitlink.add_data(handle, nvjitlink.InputType.PTX, data, len(data), "slice.ptx")
            nvjitlink.complete(handle)
        except nvjitlink.nvJitLinkError as exc:
            size = nvjitlink.get_error_log_size(handle)
            log = bytearray(size)
            nvjitlink.get_error_log(handle, log)
            text = bytes(log).rstrip(b"\0").decode(errors="replace").strip()
            raise ToolchainError(f"nvJitLink ({arch}) failed: {exc}\n{text}") from None
        size = nvjitlink.get_linked_cubin_size(handle)
        cubin = bytearray(size)
        nvjitlink.get_linked_cubin(handle, cubin)
        return bytes(cubin)
    finally:
        nvjitlink.destroy(handle)
