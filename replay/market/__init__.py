"""Agent-based M2M market simulator: honest populations and planted manipulation episodes.

All agents trade through the reference exchange (:mod:`exchange`) in event time;
:func:`simulate` returns the tape, the agent registry and the ground-truth labels, and
:func:`write_outputs` writes them as DESIGN §3.2-3.4 files.
"""

from __future__ import annotations

from replay.market.sim import (
    DEMO_CALVANO,
    SCENARIOS,
    SimResult,
    report,
    run_live,
    simulate,
    write_outputs,
)

__all__ = ["DEMO_CALVANO", "SCENARIOS", "SimResult", "report", "run_live", "simulate",
           "write_outputs"]
