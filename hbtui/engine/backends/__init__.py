"""Backends: ``sim`` (deterministic simulated GPU) and ``cuda`` (NVIDIA via cuda-python)."""

from __future__ import annotations

from hbtui.engine.backends.base import Backend, BackendError
from hbtui.engine.backends.sim import SimBackend, SimParams


def cuda_usable() -> bool:
    """True when a CUDA driver and device answer (no driver → False, never an exception)."""
    try:
        from hbtui.engine.backends.cuda import cuda_available
    except Exception:
        return False
    try:
        return bool(cuda_available())
    except Exception:
        return False


def resolve_backend(kind: str) -> str:
    """``auto`` → ``cuda`` when a GPU is usable, else ``sim``."""
    if kind == "auto":
        return "cuda" if cuda_usable() else "sim"
    if kind not in ("sim", "cuda"):
        raise ValueError(f"unknown backend {kind!r} (choose from auto, sim, cuda)")
    return kind


def make_backend(
    kind: str, sim: SimParams | None = None, device: int = 0, realtime: bool = False
) -> Backend:
    kind = resolve_backend(kind)
    if kind == "sim":
        return SimBackend(sim, realtime=realtime)
    if not cuda_usable():
        raise BackendError("backend 'cuda' asked for, but no usable NVIDIA GPU/driver was found")
    from hbtui.engine.backends.cuda import CudaBackend

    return CudaBackend(device=device)


__all__ = ["Backend", "BackendError", "SimBackend", "SimParams", "make_backend", "resolve_backend"]
