"""The scheduler's learned timing models and their vocabulary.

Everything the policies predict from lives here: the per-kernel wave model (µs per wave
of blocks), the HP task's host gaps and kernel durations, and the launch-path delays
(issue → start, HP end → start of a slice queued behind it, decision → submit, and how
late slices end per issue path). The scheduler feeds them; policies read them through
``hbtui.engine.view.SchedulerView``. This module imports no scheduler or policy code.
"""

from __future__ import annotations

from hbtui.engine.estimate import RecentQuantile
from hbtui.engine.model import KernelSpec, Launch, Task

DEFAULT_SLICE_US = 100.0  # an LP task's slice cap when it sets neither slice_us nor blocks

# The issue paths of an LP launch, each with its own lateness margin: nothing of ours ahead
# of it; queued behind LP in flight (pre-issue); behind an HP kernel from the Python loop
# (issue_lp(after=…)); armed in the backend's HP issuer, which launches it right after the
# HP kernel (Launch.armed). On the H100 armed slices end within 4 µs of prediction at p90,
# those Python queues behind an issued kernel within 28 µs. (A slice planned as armed whose
# kernel went out first is launched by Python and learns into AFTER.)
COLD, QUEUED, AFTER, ARMED = "cold", "queued", "after", "armed"
LATE_PATHS = (COLD, QUEUED, AFTER, ARMED)
LATE_QUANTILE = 0.9  # a slice path's margin: this quantile of its recent slices' lateness

EMA = 0.2  # weight of a new sample in the online models
MODEL_MAX_AGE_NS = 20_000_000  # a timing model with no sample for this long: back to its prior
MAX_DEP_NS = 100_000  # cap on one timing sample (queued-slice start, slice lateness): a
# rare ms-long host or driver stall must not poison the learned models


def learn(ema: list[float], dev: list[float], i: int, sample: float) -> None:
    """EMA of a sample and of its absolute deviation, at position ``i``."""
    dev[i] += EMA * (abs(sample - ema[i]) - dev[i])
    ema[i] += EMA * (sample - ema[i])


class WaveModel:
    """Per-kernel wave size (blocks) and wave duration learned online (EMA of µs/wave)."""

    def __init__(self, sms: int) -> None:
        self.sms = sms
        self._blocks: dict[str, int] = {}
        self._ns: dict[str, float] = {}

    def add(self, kernel: KernelSpec, blocks_per_sm: int) -> None:
        self._blocks[kernel.name] = max(1, self.sms * blocks_per_sm)
        self._ns.setdefault(kernel.name, kernel.block_us * 1000)

    def model(self, kernel: KernelSpec) -> tuple[int, int]:
        """(blocks per wave, ns per wave) of ``kernel``."""
        return self._blocks[kernel.name], int(self._ns[kernel.name])

    def observe(self, launch: Launch) -> None:
        name = launch.kernel.name
        waves = -(-launch.blocks // self._blocks[name])
        sample = (launch.end_ns - launch.start_ns) / waves
        self._ns[name] += EMA * (sample - self._ns[name])

    def predict_ns(self, kernel: KernelSpec, blocks: int) -> int:
        wb, ns = self.model(kernel)
        return -(-blocks // wb) * ns

    def snapshot(self) -> dict[str, dict[str, float]]:
        return {k: {"wave_blocks": self._blocks[k], "wave_us": self._ns[k] / 1e3} for k in self._ns}


class HpTiming:
    """One HP task's learned host gaps (mean and mean absolute deviation) and kernel
    durations, per kernel position in its request."""

    def __init__(self, task: Task) -> None:
        self.gap_ema = [float(s.gap_us * 1000) for s in task.steps]
        self.gap_dev = [float(s.gap_us * 1000 * s.jitter) for s in task.steps]
        self.dur_ema = [0.0] * len(task.steps)
        self._suffix: list[float] | None = None  # service_ns(i) cache, reset on learning

    def learn_gap(self, step: int, sample_ns: float) -> None:
        learn(self.gap_ema, self.gap_dev, step, sample_ns)
        self._suffix = None

    def learn_duration(self, step: int, sample_ns: float) -> None:
        self.dur_ema[step] += EMA * (sample_ns - self.dur_ema[step])
        self._suffix = None

    def gap_low(self, step: int, devs: float) -> float:
        """A conservative (low) prediction of the host gap before ``step``: the learned
        mean less ``devs`` mean absolute deviations."""
        return max(0.0, self.gap_ema[step] - devs * self.gap_dev[step])

    def service_ns(self, from_step: int = 0) -> float:
        """Predicted time from the host gap before ``from_step`` to the request's end."""
        if self._suffix is None:
            acc, suf = 0.0, [0.0] * (len(self.gap_ema) + 1)
            for i in range(len(self.gap_ema) - 1, -1, -1):
                acc += self.gap_ema[i] + self.dur_ema[i]
                suf[i] = acc
            self._suffix = suf
        return self._suffix[from_step]


class LaunchPaths:
    """The launch-path delays, as medians (or, for lateness, a high quantile) of recent
    samples; each goes back to its prior when it stops getting samples."""

    def __init__(self, launch_latency_ns: int) -> None:
        # issue -> first block of an LP launch with nothing ahead of it, and of an HP kernel
        # (the backend's figure is for an idle launch call)
        self.lat = RecentQuantile(0.5, launch_latency_ns)
        self.hp_lat = RecentQuantile(0.5, launch_latency_ns)
        # How late LP slices end against their prediction, per issue path: hummingbird
        # ends its slices this much before the next HP kernel is due. The paths differ by
        # an order of magnitude on the H100 (p90: 3 µs armed behind HP, 13 µs pre-issued,
        # 48 µs cold) and one margin for all of them starved the precise ones.
        self.late = {p: RecentQuantile(LATE_QUANTILE, 0.0) for p in LATE_PATHS}
        # HP end → start of an LP slice queued behind it (a GPU-side stream wait)
        self.dep = RecentQuantile(0.5, 2_000)
        # decision → submit() of the LP launch it issued (the host loop's own cost: tens of
        # µs on the H100's VM, 0 in the sim): a launch starts no earlier than now + this +
        # launch latency
        self.issue_delay = RecentQuantile(0.5, 0)
        self._all = [self.lat, self.hp_lat, self.dep, self.issue_delay, *self.late.values()]

    def expire(self, now_ns: int) -> None:
        """A model that stopped its own samples (a large delay gates the launches that
        would measure it): back to its prior, so the path is tried again."""
        for m in self._all:
            m.expire(now_ns, MODEL_MAX_AGE_NS)

    def margin_ns(self, path: str) -> int:
        return max(0, int(self.late[path].value))
