"""Calvano et al. (2020) Q-learning collusion replica: economics, learning, control, cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from replay import calvano
from replay.calvano import (
    CalvanoConfig,
    TrainResult,
    competitive,
    demand,
    impulse_response,
    load_or_train,
    nash_and_monopoly,
    price_grid,
    price_path,
    profits,
    report,
    train,
)

BASE = CalvanoConfig()
#: A short run: fast exploration decay so 4 sessions converge in ~120k periods (a few seconds).
FAST = CalvanoConfig(sessions=4, beta=1e-4, max_periods=120_000, converge_periods=10_000, seed=3)


@pytest.fixture(scope="module")
def fast() -> TrainResult:
    return train(FAST)


def test_nash_and_monopoly_match_paper() -> None:
    pn, pm = nash_and_monopoly(BASE)
    assert round(pn, 4) == 1.4729
    assert round(pm, 4) == 1.9250


def test_grid() -> None:
    pn, pm = nash_and_monopoly(BASE)
    g = price_grid(BASE)
    assert len(g) == 15
    assert g[0] == pytest.approx(pn - 0.1 * (pm - pn))
    assert g[-1] == pytest.approx(pm + 0.1 * (pm - pn))
    assert np.all(np.diff(g) > 0)


def test_demand_and_profit_sanity() -> None:
    q1, q2 = demand(1.6, 1.6, BASE)
    assert q1 == pytest.approx(q2)
    assert 0 < q1 + q2 < 1
    assert demand(1.7, 1.6, BASE)[0] < q1 < demand(1.5, 1.6, BASE)[0]  # own price lowers demand
    assert demand(1.6, 1.7, BASE)[0] > q1  # rival price raises it
    assert profits(BASE.c, 1.6, BASE)[0] == 0.0
    pn, pm = nash_and_monopoly(BASE)
    h = 1e-4
    # Nash: no profitable unilateral deviation; monopoly: maximal symmetric joint profit.
    base_n = profits(pn, pn, BASE)[0]
    assert profits(pn + h, pn, BASE)[0] < base_n
    assert profits(pn - h, pn, BASE)[0] < base_n
    joint = [sum(profits(p, p, BASE)) for p in (pm - h, pm, pm + h)]
    assert joint[1] > joint[0]
    assert joint[1] > joint[2]
    assert profits(pm, pm, BASE)[0] > base_n


def test_train_is_deterministic() -> None:
    cfg = CalvanoConfig(sessions=2, max_periods=3_000, seed=11)
    a, b = train(cfg), train(cfg)
    np.testing.assert_array_equal(a.q, b.q)
    np.testing.assert_array_equal(a.state, b.state)
    c = train(CalvanoConfig(sessions=2, max_periods=3_000, seed=12))
    assert not np.array_equal(a.q, c.q)


def test_learning_raises_prices_above_nash(fast: TrainResult) -> None:
    r = report(fast, FAST)
    assert set(r) >= {"p_nash", "p_monopoly", "prices", "delta_mean", "delta_sd", "sessions",
                      "converged", "runtime_s", "periods_mean", "scenario"}
    assert r["sessions"] == 4
    assert r["scenario"] == "calvano"
    assert fast.q.shape == (4, 2, 225, 15)
    assert fast.converged.all()
    assert r["converged"] == 1.0
    untrained = report(train(CalvanoConfig(sessions=1, max_periods=0)), FAST)
    assert untrained["delta_mean"] == pytest.approx(0.378, abs=0.01)  # best reply to uniform
    assert r["delta_mean"] > untrained["delta_mean"] + 0.2
    assert min(min(p) for p in r["prices"]) > r["p_nash"]


def test_competitive_control() -> None:
    r = competitive(CalvanoConfig(sessions=8))
    assert r["scenario"] == "competitive"
    assert abs(r["delta_mean"]) < 0.1
    assert r["price_mean"] == pytest.approx(r["p_nash"], abs=1e-3)
    g = competitive(CalvanoConfig(sessions=8), grid=True)
    assert -0.03 < g["delta_mean"] < 0.12  # the grid's own equilibria: the discreteness floor


def test_impulse_response_punishes_then_returns(fast: TrainResult) -> None:
    session = report(fast, FAST)["cycle_lengths"].index(1)  # a session with a fixed point
    path = impulse_response(fast, FAST, session=session, periods=12)
    assert len(path) == 12
    pre = path[0]
    assert path[1][0] < pre[0]  # firm 1 undercuts
    assert min(min(p) for p in path[2:5]) < pre[1]  # punishment by the rival
    assert path[-1] == pytest.approx(pre)  # back to the collusive price


def test_price_path(fast: TrainResult) -> None:
    calm = price_path(fast, FAST, periods=20, session=0)
    assert len(calm) == 20
    assert len(set(calm)) <= 3
    shocked = price_path(fast, FAST, periods=20, session=0, deviations=(5,), seed=1)
    assert shocked[:5] == calm[:5]
    assert shocked[5] != calm[5]
    assert shocked == price_path(fast, FAST, periods=20, session=0, deviations=(5,), seed=1)


def test_cache_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = CalvanoConfig(sessions=2, max_periods=2_000, seed=5)
    first = load_or_train(cfg, tmp_path)
    assert len(list(tmp_path.glob("calvano-*.npz"))) == 1

    def boom(_: CalvanoConfig) -> TrainResult:
        raise AssertionError("should load from cache")

    monkeypatch.setattr(calvano, "train", boom)
    again = load_or_train(cfg, tmp_path)
    np.testing.assert_array_equal(first.q, again.q)
    np.testing.assert_array_equal(first.converged, again.converged)
    np.testing.assert_array_equal(first.periods, again.periods)
    np.testing.assert_array_equal(first.state, again.state)
    with pytest.raises(AssertionError, match="cache"):
        load_or_train(CalvanoConfig(sessions=2, max_periods=2_000, seed=6), tmp_path)
