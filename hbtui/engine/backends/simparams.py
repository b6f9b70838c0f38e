"""The simulated GPU's parameters (engine.backends.sim). Pure data: profiles import it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SimParams:
    sms: int = 132
    launch_latency_us: float = 6.0
    launch_cost_us: float = 10.5
    loop_delay_us: float = 0.0
    interference: float = 0.3
    hp_chain: bool = False
    name: str = "simulated H100"
