"""The engine's timing and tuning constants for programs under ``hbtui run``, each with the
measured fact it rests on (docs/attach.md, "Scheduler integration")."""

POLL_NS = 20_000  # loop tick while an attached program is active (HP busy, LP in flight)
# ... with only HP programs attached: nothing to schedule, they are only timed (a request
# that ends in the program's sync is dated to it, not to the tick). A busy HP program kept
# the engine at 86 % of a core at 20 us, 33 % at 100 us (benchmarks/attach_engine_cpu.py,
# 2-vCPU dev VM), on a core that shares the last-level cache with the program's.
HP_POLL_NS = 100_000  # (--hp-poll-us)
# ... and while all are quiet (nothing in flight, no request open): an idle engine with a
# held LP program used 86 % of a core at the 20-us tick (2-vCPU dev VM). A quiet poll only
# delays the first grant after a quiet spell; request arrival times come from the records.
IDLE_POLL_NS = 250_000
# The heartbeat (LP waits for grants while it is fresher than the grace, 2 s by default)
# is written this often (or every grace/4 if that is shorter), not every poll: a write
# per 20-us poll kept its cache line moving between the engine's core and the program's.
BEAT_NS = 10_000_000
MAX_ATTACHED = 32
DEFAULT_IDLE_MS = 1.0  # burst rule: a request ends this long after HP went idle
DEFAULT_HARVEST_GUARD = 0.05  # LP leaves HP requests alone when it slows them more
# HP completion-write coalescing (header.hp_comp_us): fine only while an LP program's grants
# depend on the HP's activity (temporal: a request's end; hummingbird: also its bubbles,
# which need HP kernels seen done inside one); coarse with no LP, or spatial/exclusive,
# where nothing waits on them (a request ending in a wrapped sync is timed to the sync; one
# that does not, to its last launch at the earliest). Eager PyTorch service, H100, in one
# process: the interceptor's own time 0.6-0.7 us a launch at 100 us and 0.2 us at 1 ms;
# at 1 ms the writes still cost it ~1.2 of +2.2 % (built without them: +1.0 %); at 10 ms
# (and a write at each burst's start) +1.65 %.
HP_COMP_FINE_US = 100
HP_COMP_COARSE_US = 10_000
BUBBLE_MARGIN_NS = 30_000  # a bubble grant's spare time: poll + launch (--bubble-margin-us)
# On a time-sliced GPU (no MPS) an HP kernel launched after another process's kernel ran
# waits for the GPU to switch back to its context: +133 us (p50), +130 us (p99) on an H100,
# +10 / +33 us under MPS (benchmarks/ctx_switch.py). A grant inside a request needs a
# bubble that long more (--switch-cost-us), unless every attached program is under MPS,
# and a request takes only as many as cost it the harvest guard's share (5 %) of the
# median request (~12 for a 36-ms request), priced by what a grant measurably costs the
# HP's next kernel once known (HpTracker.grant_cost_ns).
SWITCH_COST_NS = 150_000
DEAD_CHECK_NS = 500_000_000  # how often a launcher's pid is checked
