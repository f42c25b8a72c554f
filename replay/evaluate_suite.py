"""Evaluation over many simulated days: every scenario, several seeds (``surveil evaluate-suite``).

Each (scenario, seed) is simulated, written as a tape with its registry and labels, run through
:func:`replay.backtest.run_backtest` (stage 1 and stage 2, the code the live workers run) and
scored with :func:`replay.evaluate.evaluate_dir`. Runs are scored one by one (every simulated day
starts at the same instant, so their alerts must not meet other days' labels) and the counts are
summed per kind; median delays pool the detected labels of every run.

Besides recall and precision per kind, the suite counts the **agent-level alerts on honest
days** (scenarios without manipulators: ``calm``, ``competitive``, ``honest``), which must be
zero, and the halts on those days, which are all false.

>>> SuiteRow("wash_trade").recall is None
True
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

__all__ = ["AGENT_KINDS", "HONEST_SCENARIOS", "SuiteResult", "SuiteRow", "format_suite",
           "run_suite"]

#: Alert kinds about agents (stage 2), which honest days must not raise.
AGENT_KINDS: Final = ("wash_trade", "circular_trading", "sybil_cluster", "price_collusion",
                      "anomaly")
#: Scenarios with no manipulator at all.
HONEST_SCENARIOS: Final = ("calm", "competitive", "honest")


@dataclass(slots=True)
class SuiteRow:
    """Summed detection counts of one kind over the runs."""

    kind: str
    labels: int = 0
    detected: int = 0
    alerts: int = 0
    true_alerts: int = 0
    delays: list[float] = field(default_factory=list)

    @property
    def recall(self) -> float | None:
        return self.detected / self.labels if self.labels else None

    @property
    def precision(self) -> float | None:
        return self.true_alerts / self.alerts if self.alerts else None

    @property
    def median_delay_s(self) -> float | None:
        return statistics.median(self.delays) if self.delays else None


@dataclass(slots=True)
class SuiteResult:
    rows: dict[str, SuiteRow] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    honest_agent_alerts: int = 0
    honest_halts: int = 0
    halts: int = 0
    false_halts: int = 0
    event_labels: int = 0
    event_labels_halted: int = 0


def _run_one(job: tuple[str, int, float, str]) -> dict[str, Any]:
    from replay.backtest import run_backtest
    from replay.evaluate import evaluate_dir
    from replay.market.sim import simulate, write_outputs

    scenario, seed, duration, root = job
    d = Path(root) / f"{scenario}-{seed}"
    paths = write_outputs(simulate(scenario, seed=seed, duration_s=duration), d)
    summary = run_backtest(paths["tape"], out_dir=d / "out", agents=paths["agents"],
                           keep_output=False).summary
    ev = evaluate_dir(d / "out", paths["labels"])
    return {
        "scenario": scenario, "seed": seed, "trades": summary["trades_processed"],
        "alerts_by_kind": summary["alerts_by_kind"],
        "kinds": {k.kind: (k.labels, k.detected, k.alerts, k.true_alerts) for k in ev.kinds},
        "delays": [(r.kind, r.delay_s) for r in ev.labels if r.delay_s is not None],
        "halts": (ev.halts.halts, ev.halts.false_halts, ev.halts.market_event_labels,
                  ev.halts.market_event_labels_halted),
        "missed": [(r.kind, r.t_start, list(r.agents)[:6]) for r in ev.labels if not r.detected],
        "false_alerts": [dict(e) for e in ev.false_alert_examples[:5]],
    }


def run_suite(scenarios: Sequence[str], seeds: Sequence[int], *, duration_s: float = 3600.0,
              jobs: int = 2, work_dir: Path | None = None) -> SuiteResult:
    """Simulate, backtest and score every (scenario, seed); ``jobs`` processes in parallel."""
    with tempfile.TemporaryDirectory(dir=work_dir) as root:
        plan = [(s, seed, duration_s, root) for s in scenarios for seed in seeds]
        if jobs > 1:
            with ProcessPoolExecutor(jobs) as pool:
                runs = list(pool.map(_run_one, plan))
        else:
            runs = [_run_one(j) for j in plan]
    res = SuiteResult(runs=runs)
    for run in runs:
        for kind, (labels, detected, alerts, true) in run["kinds"].items():
            row = res.rows.setdefault(kind, SuiteRow(kind))
            row.labels += labels
            row.detected += detected
            row.alerts += alerts
            row.true_alerts += true
        for kind, delay in run["delays"]:
            res.rows.setdefault(kind, SuiteRow(kind)).delays.append(delay)
        halts, false, event_labels, halted = run["halts"]
        res.halts, res.false_halts = res.halts + halts, res.false_halts + false
        res.event_labels += event_labels
        res.event_labels_halted += halted
        if run["scenario"] in HONEST_SCENARIOS:
            res.honest_agent_alerts += sum(n for k, n in run["alerts_by_kind"].items()
                                           if k in AGENT_KINDS)
            res.honest_halts += halts
    return res


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "n/a" if x is None else format(x, fmt)


def format_suite(res: SuiteResult) -> str:
    """A Markdown table per kind, then halts and the honest days' figures."""
    lines = ["| kind | labels | detected | recall | alerts | true | precision | median delay |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for kind in sorted(res.rows):
        r = res.rows[kind]
        lines.append(f"| {kind} | {r.labels} | {r.detected} | {_f(r.recall)} | {r.alerts} | "
                     f"{r.true_alerts} | {_f(r.precision)} | {_f(r.median_delay_s, '.0f')} s |")
    lines.append("")
    lines.append(f"halts: {res.halts}, false {res.false_halts}; market-event labels halted "
                 f"{res.event_labels_halted}/{res.event_labels}")
    lines.append(f"honest days: {res.honest_agent_alerts} agent-level alerts, "
                 f"{res.honest_halts} halts")
    missed = [(run["scenario"], run["seed"], m) for run in res.runs for m in run["missed"]]
    if missed:
        lines.append(f"missed labels: {len(missed)}")
        lines += [f"  {s}/{seed}: {m[0]} at {m[1]} agents {m[2]}" for s, seed, m in missed[:20]]
    return "\n".join(lines)
