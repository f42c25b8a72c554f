"""``replay.evaluate``: alerts and halts scored against labels, on hand-made cases."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from replay.evaluate import (
    MARKET_ALIASES,
    Evaluation,
    EvaluationError,
    evaluate,
    evaluate_dir,
    format_table,
)
from streams.contracts import Alert, Halt, iso

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
_ids = itertools.count(1)


def label(kind: str = "flash_crash", start: float = 0.0, end: float = 60.0,
          instruments: tuple[str, ...] = ("GPU",), agents: tuple[str, ...] = (),
          note: str = "") -> dict[str, Any]:
    return {"kind": kind, "t_start": iso(T0 + start), "t_end": iso(T0 + end),
            "instruments": list(instruments), "agents": list(agents), "note": note}


def alert(kind: str = "flash_crash", at: float = 10.0, instrument: str | None = "GPU",
          agents: tuple[str, ...] = (), alert_id: str | None = None) -> dict[str, Any]:
    return {"schema": "alert/1", "alert_id": alert_id or f"a{next(_ids)}", "ts": iso(T0 + at),
            "kind": kind, "score": 80.0, "instrument": instrument, "agents": list(agents),
            "venue": "v", "detector": "test/1", "summary": "s", "evidence": {}}


def halt(at: float, instrument: str = "GPU", state: str = "HALTED", seq: int | None = None,
         venue: str = "v") -> dict[str, Any]:
    return {"schema": "halt/1", "seq": seq if seq is not None else next(_ids),
            "ts": iso(T0 + at), "emitted_at": iso(T0 + at), "venue": venue,
            "instrument": instrument, "state": state,
            "reason": "RESUME" if state == "TRADING" else "VELOCITY", "resume_at": None,
            "reference_price": None, "band_low": None, "band_high": None, "alert_ids": []}


def stats(ev: Evaluation, kind: str) -> tuple[Any, ...]:
    """(labels, detected, recall, alerts, true, false, precision, median delay) of one kind."""
    k = ev.kind(kind)
    assert k is not None, kind
    return (k.labels, k.detected, k.recall, k.alerts, k.true_alerts, k.false_alerts, k.precision,
            k.median_delay_s)


# --- alerts ------------------------------------------------------------------------------------


def test_perfect_detection() -> None:
    labels = [label("flash_crash", 0, 60, ("GPU",)),
              label("wash_trade", 100, 200, (), ("w1", "w2"))]
    alerts = [alert("flash_crash", 5, "GPU"), alert("wash_trade", 130, "KWH", ("w2",))]
    ev = evaluate(alerts, [], labels)
    assert [k.kind for k in ev.kinds] == ["wash_trade", "flash_crash"]
    assert stats(ev, "flash_crash") == (1, 1, 1.0, 1, 1, 0, 1.0, 5.0)
    assert stats(ev, "wash_trade") == (1, 1, 1.0, 1, 1, 0, 1.0, 30.0)
    o = ev.overall
    assert (o.labels, o.detected, o.recall, o.alerts, o.true_alerts, o.false_alerts, o.precision,
            o.median_delay_s) == (2, 2, 1.0, 2, 2, 0, 1.0, 17.5)
    assert ev.false_alert_examples == ()


def test_a_miss() -> None:
    ev = evaluate([alert("flash_crash", 5, "GPU")], [],
                  [label("flash_crash", 0, 60), label("flash_crash", 1000, 1060)])
    assert stats(ev, "flash_crash") == (2, 1, 0.5, 1, 1, 0, 1.0, 5.0)
    missed = [r for r in ev.labels if not r.detected]
    assert [(r.source, r.matching_alerts, r.delay_s, r.first_alert_id) for r in missed] == [
        ("labels[1]", 0, None, None)]


def test_only_misses_leave_delay_and_precision_undefined() -> None:
    ev = evaluate([], [], [label("price_collusion", 0, 600, ("GPU",), ("p1", "p2"))])
    assert stats(ev, "price_collusion") == (1, 0, 0.0, 0, 0, 0, None, None)
    assert (ev.overall.recall, ev.overall.precision, ev.overall.median_delay_s) == (0.0, None,
                                                                                     None)


def test_false_alerts() -> None:
    alerts = [alert("flash_crash", 5, "GPU", alert_id="hit"),
              alert("flash_crash", 6, "KWH", alert_id="other-instrument"),
              alert("sybil_cluster", 7, None, ("s1",), alert_id="no-labels-of-this-kind")]
    ev = evaluate(alerts, [], [label("flash_crash", 0, 60)])
    assert stats(ev, "flash_crash") == (1, 1, 1.0, 2, 1, 1, 0.5, 5.0)
    assert stats(ev, "sybil_cluster") == (0, 0, None, 1, 0, 1, 0.0, None)
    assert (ev.overall.alerts, ev.overall.true_alerts, ev.overall.false_alerts,
            ev.overall.precision) == (3, 1, 2, 1 / 3)
    assert [a["alert_id"] for a in ev.false_alert_examples] == ["other-instrument",
                                                                "no-labels-of-this-kind"]
    assert ev.false_alert_examples[0] == {"alert_id": "other-instrument", "kind": "flash_crash",
                                          "ts": "2026-01-01T00:00:06.000000Z",
                                          "instrument": "KWH"}


@pytest.mark.parametrize(("at", "grace_s", "matched"), [
    (0.0, 60.0, True),        # at t_start
    (-0.001, 60.0, False),    # a millisecond before t_start
    (120.0, 60.0, True),      # t_end + grace exactly
    (119.999, 60.0, True),    # just inside
    (120.001, 60.0, False),   # just outside
    (60.0, 0.0, True),        # no grace: t_end itself still counts
    (60.5, 0.0, False),
    (90.0, 30.0, True),
    (90.001, 30.0, False),
])
def test_grace_window(at: float, grace_s: float, matched: bool) -> None:
    ev = evaluate([alert("flash_crash", at, "GPU")], [], [label("flash_crash", 0, 60)],
                  grace_s=grace_s)
    assert stats(ev, "flash_crash") == ((1, 1, 1.0, 1, 1, 0, 1.0, at) if matched
                                        else (1, 0, 0.0, 1, 0, 1, 0.0, None))
    assert ev.grace_s == grace_s


def test_wrong_kind_is_not_matched() -> None:
    ev = evaluate([alert("price_spike", 10, "GPU"), alert("anomaly", 11, "GPU")], [],
                  [label("flash_crash", 0, 60)])
    assert stats(ev, "flash_crash") == (1, 0, 0.0, 0, 0, 0, None, None)
    assert stats(ev, "price_spike") == (0, 0, None, 1, 0, 1, 0.0, None)
    assert stats(ev, "anomaly") == (0, 0, None, 1, 0, 1, 0.0, None)
    assert [k.kind for k in ev.kinds] == ["flash_crash", "price_spike", "anomaly"]


def test_contagion_strict_by_default_and_aliases_opt_in() -> None:
    labels = [label("contagion", 0, 120, ("GPU", "KWH"))]
    alerts = [alert("flash_crash", 20, "KWH", alert_id="k"), alert("price_spike", 8, "GPU",
                                                                   alert_id="g"),
              alert("flash_crash", 30, "BW", alert_id="bw")]
    strict = evaluate(alerts, [], labels)
    assert stats(strict, "contagion") == (1, 0, 0.0, 0, 0, 0, None, None)
    assert stats(strict, "flash_crash") == (0, 0, None, 2, 0, 2, 0.0, None)
    assert strict.aliases == {}
    lenient = evaluate(alerts, [], labels, aliases=MARKET_ALIASES)
    assert lenient.aliases == {"contagion": ("flash_crash", "price_spike")}
    assert stats(lenient, "contagion") == (1, 1, 1.0, 0, 0, 0, None, 8.0)
    assert stats(lenient, "flash_crash") == (0, 0, None, 2, 1, 1, 0.5, None)
    assert stats(lenient, "price_spike") == (0, 0, None, 1, 1, 0, 1.0, None)
    assert lenient.labels[0].first_alert_id == "g"
    assert lenient.labels[0].matching_alerts == 2


@pytest.mark.parametrize(("instrument", "agents", "matched"), [
    ("GPU", (), True),                 # instrument overlap only
    ("KWH", ("x2",), True),            # agent overlap only
    (None, ("x1", "zz"), True),        # agent overlap, no instrument
    ("GPU", ("zz",), True),            # instrument overlap, agents disjoint
    ("KWH", ("zz",), False),           # neither
    (None, (), False),                 # nothing to overlap with
])
def test_instrument_or_agent_overlap(instrument: str | None, agents: tuple[str, ...],
                                     matched: bool) -> None:
    ev = evaluate([alert("wash_trade", 10, instrument, agents)], [],
                  [label("wash_trade", 0, 60, ("GPU",), ("x1", "x2"))])
    assert stats(ev, "wash_trade")[:3] == ((1, 1, 1.0) if matched else (1, 0, 0.0))


def test_unscoped_label_matches_any_alert_of_its_kind() -> None:
    unscoped = label("anomaly", 0, 60, (), ())
    ev = evaluate([alert("anomaly", 10, None, (), "bare"), alert("anomaly", 20, "GPU", ("q",))],
                  [], [unscoped])
    assert stats(ev, "anomaly") == (1, 1, 1.0, 2, 2, 0, 1.0, 10.0)
    assert ev.labels[0].first_alert_id == "bare"
    # a bare alert cannot match a scoped label
    ev = evaluate([alert("anomaly", 10, None, ())], [], [label("anomaly", 0, 60, ("GPU",), ())])
    assert stats(ev, "anomaly") == (1, 0, 0.0, 1, 0, 1, 0.0, None)


def test_one_label_several_alerts() -> None:
    alerts = [alert("circular_trading", 20, None, ("c1",), "second"),
              alert("circular_trading", 5, None, ("c2", "c3"), "first"),
              alert("circular_trading", 40, "BW", ("c3",), "third")]
    ev = evaluate(alerts, [], [label("circular_trading", 0, 60, (), ("c1", "c2", "c3"))])
    assert stats(ev, "circular_trading") == (1, 1, 1.0, 3, 3, 0, 1.0, 5.0)
    r = ev.labels[0]
    assert (r.matching_alerts, r.first_alert_id, r.delay_s) == (3, "first", 5.0)


def test_first_alert_tie_keeps_input_order() -> None:
    ev = evaluate([alert("wash_trade", 7, "GPU", alert_id="b"),
                   alert("wash_trade", 7, "GPU", alert_id="a")], [],
                  [label("wash_trade", 0, 60)])
    assert ev.labels[0].first_alert_id == "b"


def test_several_labels_one_alert() -> None:
    labels = [label("wash_trade", 0, 100, ("GPU",), ("w1",)),
              label("wash_trade", 30, 60, ("KWH",), ("w2",)),
              label("wash_trade", 200, 300, ("GPU",), ("w1",))]
    ev = evaluate([alert("wash_trade", 50, "STORAGE", ("w1", "w2"))], [], labels)
    assert stats(ev, "wash_trade") == (3, 2, 2 / 3, 1, 1, 0, 1.0, 35.0)
    assert [r.delay_s for r in ev.labels] == [50.0, 20.0, None]


def test_timestamps_with_offsets_and_epoch_seconds() -> None:
    lab = label("flash_crash", 0, 60)
    a1 = dict(alert("flash_crash", 0), ts="2026-01-01T01:00:30+01:00")  # = T0 + 30 s
    a2 = dict(alert("flash_crash", 0, "GPU"), ts=T0 + 12.5)
    ev = evaluate([a1, a2], [], [lab])
    assert stats(ev, "flash_crash") == (1, 1, 1.0, 2, 2, 0, 1.0, 12.5)


def test_delays_are_rounded_to_the_microsecond() -> None:
    ev = evaluate([alert("flash_crash", 0.123457)], [], [label("flash_crash", 0.000001, 60)])
    assert ev.labels[0].delay_s == 0.123456


def test_accepts_contract_structs() -> None:
    a = Alert(alert_id="s1", ts=iso(T0 + 3), kind="flash_crash", score=60.0, instrument="GPU",
              agents=[], venue="v", detector="d", summary="s", evidence={})
    h = Halt(seq=1, ts=iso(T0 + 4), emitted_at=iso(T0 + 4), venue="v", instrument="GPU",
             state="PAUSED", reason="VELOCITY", resume_at=None, reference_price=None,
             band_low=None, band_high=None, alert_ids=["s1"])
    ev = evaluate([a], [h], [label("flash_crash", 0, 60)])
    assert stats(ev, "flash_crash") == (1, 1, 1.0, 1, 1, 0, 1.0, 3.0)
    assert (ev.halts.halts, ev.halts.on_market_events, ev.halts.median_delay_s) == (1, 1, 4.0)


def test_duplicate_alerts_and_halts_are_counted_once() -> None:
    a = alert("flash_crash", 70, "KWH", alert_id="dup")
    h = halt(200, "GPU", seq=42)
    ev = evaluate([a, dict(a), alert("flash_crash", 5, "GPU", alert_id="ok")],
                  [h, dict(h), halt(210, "GPU", seq=43)], [label("flash_crash", 0, 60)])
    assert stats(ev, "flash_crash") == (1, 1, 1.0, 2, 1, 1, 0.5, 5.0)
    assert ev.duplicates == {"alerts": 1, "halts": 1}
    assert ev.halts.halts == 2
    # an alert without an id is never treated as a duplicate
    no_id = {k: v for k, v in alert("flash_crash", 5).items() if k != "alert_id"}
    ev = evaluate([no_id, dict(no_id)], [], [label("flash_crash", 0, 60)])
    assert stats(ev, "flash_crash") == (1, 1, 1.0, 2, 2, 0, 1.0, 5.0)
    assert ev.labels[0].first_alert_id is None


# --- halts -------------------------------------------------------------------------------------


def test_halts_on_market_events_and_false_halts() -> None:
    labels = [label("flash_crash", 0, 60, ("GPU",)),
              label("price_spike", 1000, 1060, ("BW",)),
              label("wash_trade", 0, 3000, ("KWH",), ("w",))]  # not a market event
    halts = [halt(10, "GPU", "PAUSED"),          # on the crash
             halt(70, "GPU", "TRADING"),         # resumption: not a halt
             halt(20, "KWH", "HALTED"),          # wrong instrument: false
             halt(500, "GPU", "HALTED"),         # outside every window: false
             halt(119, "GPU", "QUOTE_ONLY"),     # inside the grace window: on the crash
             halt(1500, "BW", "HALTED")]         # after the spike's window: false
    ev = evaluate([], halts, labels)
    h = ev.halts
    assert (h.halts, h.on_market_events, h.false_halts, h.precision) == (5, 2, 3, 0.4)
    assert (h.market_event_labels, h.market_event_labels_halted, h.recall, h.median_delay_s,
            h.resumptions) == (2, 1, 0.5, 10.0, 1)
    assert [(r.market_event, r.matching_halts, r.halt_delay_s) for r in ev.labels] == [
        (True, 2, 10.0), (True, 0, None), (False, 0, None)]


def test_market_wide_halt_and_market_wide_label() -> None:
    labels = [label("price_spike", 0, 60, ("BW",)), label("contagion", 100, 200, (), ())]
    halts = [halt(30, "*", "HALTED"),    # market-wide: on the BW spike
             halt(150, "KWH", "PAUSED"),  # any instrument is inside a label without instruments
             halt(50, "*", "TRADING")]
    ev = evaluate([], halts, labels)
    h = ev.halts
    assert (h.halts, h.on_market_events, h.false_halts, h.market_event_labels_halted,
            h.recall, h.median_delay_s, h.resumptions) == (2, 2, 0, 2, 1.0, 40.0, 1)
    assert [r.halt_delay_s for r in ev.labels] == [30.0, 50.0]


def test_one_halt_on_two_events_is_one_halt() -> None:
    labels = [label("flash_crash", 0, 60, ("GPU",)), label("contagion", 10, 90, ("GPU", "KWH"))]
    ev = evaluate([], [halt(40, "GPU")], labels)
    h = ev.halts
    assert (h.halts, h.on_market_events, h.false_halts, h.market_event_labels_halted,
            h.median_delay_s) == (1, 1, 0, 2, 35.0)


# --- empty and malformed input -----------------------------------------------------------------


def test_empty_inputs_have_null_metrics() -> None:
    ev = evaluate([], [], [])
    assert ev.kinds == ()
    o, h = ev.overall, ev.halts
    assert (o.labels, o.detected, o.recall, o.alerts, o.true_alerts, o.false_alerts, o.precision,
            o.median_delay_s) == (0, 0, None, 0, 0, 0, None, None)
    assert (h.halts, h.on_market_events, h.false_halts, h.precision, h.market_event_labels,
            h.market_event_labels_halted, h.recall, h.median_delay_s, h.resumptions) == (
        0, 0, 0, None, 0, 0, None, None, 0)
    d = json.loads(json.dumps(ev.to_dict()))
    assert d["overall"] == {"labels": 0, "detected": 0, "recall": None, "alerts": 0,
                            "true_alerts": 0, "false_alerts": 0, "precision": None,
                            "median_delay_s": None}
    assert (d["kinds"], d["labels"]) == ({}, [])


def test_only_halts_no_labels() -> None:
    h = evaluate([], [halt(1), halt(2, state="TRADING")], []).halts
    assert (h.halts, h.on_market_events, h.false_halts, h.precision, h.recall,
            h.resumptions) == (1, 0, 1, 0.0, None, 1)


def test_malformed_records_are_reported_not_fatal() -> None:
    alerts: list[Any] = [
        alert("flash_crash", 5),
        {"kind": "flash_crash", "instrument": "GPU"},
        dict(alert(), ts="yesterday"),
        dict(alert(), ts="2026-01-01T00:00:10"),
        dict(alert(), instrument=7),
        dict(alert(), agents="a1"),
        dict(alert(), kind=""),
        ["not", "an", "object"],
    ]
    labels: list[Any] = [label("flash_crash", 0, 60),
                         dict(label(), t_start=iso(T0 + 90)),
                         {k: v for k, v in label().items() if k != "agents"}]
    halts: list[Any] = [halt(10), {"ts": iso(T0), "instrument": "GPU"}, dict(halt(3), ts=None)]
    ev = evaluate(alerts, halts, labels)
    assert ev.malformed == {"alerts": 7, "halts": 2, "labels": 2}
    assert ev.malformed_examples["alerts"] == (
        "alerts[1]: ts is missing",
        "alerts[2]: ts: ts is not ISO-8601: 'yesterday'",
        "alerts[3]: ts: ts has no time zone: '2026-01-01T00:00:10'",
        "alerts[4]: instrument must be a string or null, got 7",
        "alerts[5]: agents must be a list of non-empty strings, got 'a1'",
    )  # only the first five reasons are kept
    assert ev.malformed_examples["halts"] == (
        "halts[1]: state must be a non-empty string, got None",
        "halts[2]: ts: ts must be an ISO-8601 string or epoch seconds, got NoneType")
    assert ev.malformed_examples["labels"] == (
        "labels[1]: t_start '2026-01-01T00:01:30.000000Z' is after t_end "
        "'2026-01-01T00:01:00.000000Z'",
        "labels[2]: agents must be a list of non-empty strings, got None")
    assert stats(ev, "flash_crash") == (1, 1, 1.0, 1, 1, 0, 1.0, 5.0)
    assert (ev.halts.halts, ev.halts.on_market_events) == (1, 1)


def test_not_an_object_reason() -> None:
    not_objects: list[Any] = [42]
    ev = evaluate(not_objects, [], [])
    assert ev.malformed_examples["alerts"] == ("alerts[0]: not a JSON object: int",)


@pytest.mark.parametrize("grace_s", [-1.0, float("nan"), float("inf")])
def test_bad_grace_is_refused(grace_s: float) -> None:
    with pytest.raises(EvaluationError, match="grace_s must be a finite number >= 0"):
        evaluate([], [], [], grace_s=grace_s)


def test_bad_aliases_are_refused() -> None:
    with pytest.raises(EvaluationError, match="aliases maps a label kind"):
        evaluate([], [], [], aliases={"contagion": "flash_crash"})


# --- output ------------------------------------------------------------------------------------


def _mixed() -> Evaluation:
    labels = [label("flash_crash", 0, 60, ("GPU",)), label("wash_trade", 0, 600, (), ("w1",)),
              label("price_spike", 1000, 1060, ("BW",))]
    alerts = [alert("flash_crash", 12, "GPU", alert_id="fc1"),
              alert("flash_crash", 3000, "GPU", alert_id="fc2"),
              alert("wash_trade", 100, None, ("w1", "w9"), alert_id="wt1")]
    halts = [halt(14, "GPU", "PAUSED"), halt(320, "GPU", "TRADING"), halt(3000, "GPU")]
    return evaluate(alerts, halts, labels)


def test_format_table() -> None:
    assert format_table(_mixed()) == "\n".join([
        "kind         labels  detected  recall  alerts  true  false  precision  median delay",
        "wash_trade        1         1   1.000       1     1      0      1.000       100.0 s",
        "flash_crash       1         1   1.000       2     1      1      0.500        12.0 s",
        "price_spike       1         0   0.000       0     0      0        n/a           n/a",
        "overall           3         2   0.667       3     2      1      0.667        56.0 s",
        "halts: 2 (on market events 1, false 1, precision 0.500); resumptions 1",
        "market-event labels halted: 1/2 (recall 0.500); median halt delay 14.0 s",
        "matching: grace 60 s after t_end; kinds strict",
        "missed labels: 1",
        "  labels[2] price_spike 2026-01-01T00:16:40.000000Z..2026-01-01T00:17:40.000000Z "
        "instruments ['BW'] agents []",
    ])


def test_format_table_with_aliases_duplicates_and_malformed() -> None:
    ev = evaluate([alert("flash_crash", 5, alert_id="x"), alert("flash_crash", 5, alert_id="x"),
                   {"kind": "anomaly"}], [], [label("contagion", 0, 60)], aliases=MARKET_ALIASES)
    assert format_table(ev).splitlines() == [
        "kind         labels  detected  recall  alerts  true  false  precision  median delay",
        "flash_crash       0         0     n/a       1     1      0      1.000           n/a",
        "contagion         1         1   1.000       0     0      0        n/a         5.0 s",
        "overall           1         1   1.000       1     1      0      1.000         5.0 s",
        "halts: 0 (on market events 0, false 0, precision n/a); resumptions 0",
        "market-event labels halted: 0/1 (recall 0.000); median halt delay n/a",
        "matching: grace 60 s after t_end; aliases contagion <- flash_crash, price_spike",
        "duplicates skipped: alerts 1, halts 0",
        "malformed (skipped): alerts 1, halts 0, labels 0",
        "  alerts[2]: ts is missing",
    ]


def test_to_dict_shape() -> None:
    d = _mixed().to_dict()
    assert json.loads(json.dumps(d)) == d
    assert list(d) == ["schema", "grace_s", "aliases", "kinds", "overall", "halts", "labels",
                       "false_alert_examples", "malformed", "duplicates"]
    assert (d["schema"], d["grace_s"], d["aliases"]) == ("evaluation/1", 60.0, {})
    assert list(d["kinds"]) == ["wash_trade", "flash_crash", "price_spike"]
    assert d["kinds"]["flash_crash"] == {"labels": 1, "detected": 1, "recall": 1.0, "alerts": 2,
                                         "true_alerts": 1, "false_alerts": 1, "precision": 0.5,
                                         "median_delay_s": 12.0}
    assert d["overall"]["recall"] == 2 / 3
    assert d["halts"] == {"halts": 2, "on_market_events": 1, "false_halts": 1, "precision": 0.5,
                          "market_event_labels": 2, "market_event_labels_halted": 1,
                          "recall": 0.5, "median_delay_s": 14.0, "resumptions": 1}
    assert d["labels"][0] == {"source": "labels[0]", "kind": "flash_crash",
                              "t_start": "2026-01-01T00:00:00.000000Z",
                              "t_end": "2026-01-01T00:01:00.000000Z", "instruments": ["GPU"],
                              "agents": [], "detected": True, "matching_alerts": 1,
                              "first_alert_id": "fc1", "delay_s": 12.0, "market_event": True,
                              "matching_halts": 1, "halt_delay_s": 14.0}
    assert d["labels"][1]["matching_halts"] is None  # wash_trade: halts are not scored
    assert d["false_alert_examples"] == [{"alert_id": "fc2", "kind": "flash_crash",
                                          "ts": "2026-01-01T00:50:00.000000Z",
                                          "instrument": "GPU"}]
    assert d["malformed"] == {s: {"count": 0, "examples": []}
                              for s in ("alerts", "halts", "labels")}
    assert d["duplicates"] == {"alerts": 0, "halts": 0}


# --- files -------------------------------------------------------------------------------------


def _jsonl(rows: list[Any]) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def test_evaluate_dir(tmp_path: Path) -> None:
    out = tmp_path / "bt"
    out.mkdir()
    (out / "alerts.jsonl").write_text(_jsonl([
        alert("flash_crash", 12, "GPU", alert_id="fc1"), "", "{not json",
        alert("wash_trade", 100, None, ("w1",), alert_id="wt1"), "[1, 2]"]))
    (out / "halts.jsonl").write_text(_jsonl([halt(14, "GPU"), halt(320, "GPU", "TRADING")]))
    labels_path = tmp_path / "labels.jsonl"
    labels_path.write_text(_jsonl([label("flash_crash", 0, 60), "   ",
                                   label("wash_trade", 0, 600, (), ("w1",)),
                                   label("sybil_cluster", 0, 600, (), ("s1",))]))
    ev = evaluate_dir(out, labels_path)
    assert stats(ev, "flash_crash") == (1, 1, 1.0, 1, 1, 0, 1.0, 12.0)
    assert stats(ev, "wash_trade") == (1, 1, 1.0, 1, 1, 0, 1.0, 100.0)
    assert stats(ev, "sybil_cluster") == (1, 0, 0.0, 0, 0, 0, None, None)
    assert (ev.overall.recall, ev.overall.precision, ev.overall.median_delay_s) == (2 / 3, 1.0,
                                                                                     56.0)
    assert (ev.halts.halts, ev.halts.on_market_events, ev.halts.recall,
            ev.halts.resumptions) == (1, 1, 1.0, 1)
    assert ev.malformed == {"alerts": 2, "halts": 0, "labels": 0}
    assert ev.malformed_examples["alerts"][0].startswith("alerts.jsonl:3: bad JSON: ")
    assert ev.malformed_examples["alerts"][1] == "alerts.jsonl:5: not a JSON object: list"
    assert [r.source for r in ev.labels] == ["labels.jsonl:1", "labels.jsonl:3",
                                             "labels.jsonl:4"]
    assert evaluate_dir(str(out), str(labels_path), grace_s=0).grace_s == 0.0


def test_evaluate_dir_reads_gzip_and_undecodable_bytes(tmp_path: Path) -> None:
    (tmp_path / "alerts.jsonl").write_bytes(
        b"\xff\xfe\n" + json.dumps(alert("flash_crash", 9, "GPU")).encode() + b"\n")
    (tmp_path / "halts.jsonl").write_bytes(b"")
    with gzip.open(tmp_path / "labels.jsonl.gz", "wt") as f:
        f.write(_jsonl([label("flash_crash", 0, 60)]))
    ev = evaluate_dir(tmp_path, tmp_path / "labels.jsonl.gz")
    assert stats(ev, "flash_crash") == (1, 1, 1.0, 1, 1, 0, 1.0, 9.0)
    assert ev.malformed["alerts"] == 1
    assert ev.malformed_examples["alerts"][0].startswith("alerts.jsonl:1: bad JSON: ")


def test_evaluate_dir_missing_files(tmp_path: Path) -> None:
    labels_path = tmp_path / "labels.jsonl"
    labels_path.write_text(_jsonl([label()]))
    with pytest.raises(EvaluationError, match="no such directory"):
        evaluate_dir(tmp_path / "nope", labels_path)
    with pytest.raises(EvaluationError, match=r"no alerts\.jsonl"):
        evaluate_dir(tmp_path, labels_path)
    (tmp_path / "alerts.jsonl").write_text("")
    with pytest.raises(EvaluationError, match=r"no halts\.jsonl"):
        evaluate_dir(tmp_path, labels_path)
    (tmp_path / "halts.jsonl").write_text("")
    with pytest.raises(ValueError, match="no such labels file"):
        evaluate_dir(tmp_path, tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(EvaluationError, match="cannot read"):
        evaluate_dir(tmp_path, tmp_path / "bad.jsonl.gz")
    ev = evaluate_dir(tmp_path, labels_path)
    assert stats(ev, "flash_crash") == (1, 0, 0.0, 0, 0, 0, None, None)
