"""The backend interface: what the scheduler needs from a GPU (simulated or real).

The scheduler is single-threaded: it calls ``submit`` to enqueue launches and
``wait`` to let time pass until a completion or its next host event, whichever
comes first. Nothing here may block past ``until_ns``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from hbtui.engine.model import KernelSpec, Launch

# Stream 0 is the greatest-priority stream (HP); larger numbers are less urgent (LP).
HP_STREAM = 0
LP_STREAM = 1


class BackendError(RuntimeError):
    """A backend failure the engine reports instead of crashing or hanging."""


class Backend(ABC):
    name: str = "?"
    # True when the backend can issue HP requests itself (``submit_chain``): a native
    # thread on the cuda backend, modelled by the sim when SimParams.hp_chain is set.
    hp_chain: bool = False
    hp_issue: str = "python"  # how HP kernels are issued, for results and the console
    # The GPU's PCI bus id ("00000000:19:00.0"): what tells identical GPUs of one box apart
    # (nvidia-smi and NVML name them so). None on the simulated GPU.
    pci_bus_id: str | None = None

    @property
    @abstractmethod
    def device(self) -> str:
        """Human-readable device name ("simulated H100 (132 SMs)", "NVIDIA H100 80GB HBM3")."""

    @property
    @abstractmethod
    def sms(self) -> int:
        """Number of SMs (used for the wave model)."""

    @abstractmethod
    def prepare(self, kernel: KernelSpec) -> int:
        """Make ``kernel`` launchable (compile, allocate inputs); return resident blocks per SM."""

    @abstractmethod
    def now_ns(self) -> int:
        """The backend's clock (virtual for the sim, monotonic for real GPUs)."""

    @abstractmethod
    def submit(self, launch: Launch) -> None:
        """Enqueue ``launch`` on its stream. Sets ``launch.issue_ns``. Never waits for the GPU."""

    @abstractmethod
    def wait(self, until_ns: int) -> list[Launch]:
        """Advance until at least one launch completes or ``until_ns`` is reached.

        Returns the launches that completed (``start_ns``/``end_ns`` filled in), in
        completion order; an empty list means ``until_ns`` was reached first.
        """

    def sliceable(self, kernel: KernelSpec) -> bool:
        """Whether the prepared ``kernel`` runs as slices (a .cu kernel the slicer refuses
        is only known unsliceable once compiled, in ``prepare``)."""
        return kernel.sliceable

    def can_chain(self, kernel: KernelSpec) -> bool:
        """Whether ``kernel`` may be issued through ``submit_chain``."""
        return False

    def submit_chain(
        self, launches: Sequence[Launch], gaps_ns: Sequence[int], not_before_ns: int
    ) -> None:
        """Hand one HP request over: the backend issues ``launches[i]`` ``gaps_ns[i]``
        after it saw ``launches[i-1]`` complete, and ``launches[0]`` ``gaps_ns[0]`` after
        max(``not_before_ns``, the completion of the previous chained launch). Chains run
        FIFO, one launch at a time. Completions come back through ``wait`` with
        ``issue_ns`` and ``seen_ns`` (the issuer saw the end) set."""
        raise NotImplementedError(f"backend {self.name} cannot chain HP launches")

    def chain_issued(self, launch: Launch) -> bool:
        """Whether a chained launch has been issued (or done). An LP launch submitted with
        ``after=launch`` starts on the GPU only once that launch has ended, with no host
        round trip (a stream wait on an event); before it is issued only a kernel that
        ``can_arm`` may be submitted so (the issuer launches it right after ``launch``)."""
        return False

    def can_arm(self, kernel: KernelSpec) -> bool:
        """Whether an LP launch of ``kernel`` may be submitted ``after`` a chained launch
        that is not issued yet (see ``chain_issued``)."""
        return False

    def chain_expect(self, t_ns: int) -> None:  # noqa: B027 - optional hook
        """The next chained request is expected at ``t_ns`` (the issuer may idle till near it)."""

    # Fraction of each HP SLO that LP slices may never use (hummingbird's slack bound):
    # what LP costs HP that the slack model cannot see. On the H100 HP kernels run 5-8 %
    # slower for a while after LP ran (cache pollution; clocks stay at 1980 MHz), and near
    # saturation that compounds over the queue: 0.25 gave 97.73 % attainment against
    # exclusive's 99.00 %, 0.35 gave 98.24 % (docs/benchmarks/h100.md).
    slo_reserve = 0.35

    def launch_latency_ns(self) -> int:
        """Typical enqueue → GPU-visible latency, used to pre-issue the next slice."""
        return 5_000

    def start_gpu_sampling(self) -> None:
        """Begin sampling the GPU for ``gpu_sample`` (the engine calls this before it
        schedules: opening NVML costs tens of ms). Nothing to sample by default."""
        return None

    def gpu_sample(self) -> dict[str, Any] | None:
        """The latest NVML-style sample (util, clocks, power, memory), or None where absent
        or not started."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release device resources."""
