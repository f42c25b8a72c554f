"""Stage 2 without Kafka: stage 1's summaries and watermarks in, market structure out, the same
whatever the partitioning, arrival order or duplicates."""

from __future__ import annotations

import pickle
import random
import zlib
from pathlib import Path
from types import SimpleNamespace

import msgspec
import pytest
from aiokafka import TopicPartition
from test_pipeline import crash_market, wall_clock

from detectors.registry import AgentBook
from streams.contracts import Agent, encode
from streams.outputs import MemorySink
from streams.partition import EngineConfig
from streams.pipeline import EngineOutput, Surveillance
from streams.sealed import seal
from streams.settings import Settings
from streams.venue import VenueOutput, VenueStage, restore_stage, snapshot_stage
from streams.venue_worker import VenueWorker


def flows(partitions: int) -> list[bytes]:
    """Stage 1 over the crash market, instruments spread over ``partitions`` partitions."""
    tape = crash_market()
    names = sorted({t.instrument for t in tape})
    engine = Surveillance(engine=EngineConfig(), wall_clock=wall_clock)
    out = EngineOutput()
    for i in range(0, len(tape), 700):
        chunk = tape[i:i + 700]
        for p in range(partitions):
            mine = [t for t in chunk if names.index(t.instrument) % partitions == p]
            if mine:
                out.extend(engine.process(mine, partition=p))
    records = [encode(s) for s in out.summaries]
    records += [encode({"schema": "watermark/1", "venue": w.venue, "partition": w.partition,
                        "watermark": w.watermark}) for w in out.watermarks]
    return records


def metrics(records: list[bytes], partitions: int) -> list[tuple[object, ...]]:
    stage = VenueStage(partitions_total=partitions)
    out = []
    for r in records:
        out += stage.handle(r).metrics
    return sorted((m.instrument, m.window_start, m.trades, round(m.hhi, 6),
                   round(m.top5_share, 9), m.agents) for m in out)


def test_structure_does_not_depend_on_partitioning_order_or_duplicates() -> None:
    one = metrics(flows(1), 1)
    assert len(one) > 50
    assert {m[0] for m in one} == {"GPU-H100-1H", "KWH-SA-GRID", "STORAGE-TB-MO", "BW-10G-1H"}
    four = flows(4)
    # summaries in any order, each delivered twice; watermarks after the summaries they cover
    summaries = [r for r in four if b"flows/1" in r]
    marks = [r for r in four if b"watermark/1" in r]
    random.Random(7).shuffle(summaries)
    assert metrics(summaries + summaries + marks, 4) == one


def test_nothing_closes_before_every_partition_has_reported() -> None:
    records = flows(2)
    only_p0 = [r for r in records if msgspec.json.decode(r)["partition"] == 0]
    assert metrics(only_p0, 2) == []
    idle = encode({"schema": "watermark/1", "venue": "*", "partition": 1, "watermark": 0.0})
    assert metrics([*only_p0, idle], 2)


def test_input_after_its_window_closed_is_counted_in_the_report() -> None:
    """Late rows change nothing but show in the stage's counters (the worker logs them)."""
    records = flows(2)
    marks = [r for r in records if b"watermark/1" in r]
    late = [r for r in records if b"watermark/1" not in r
            and msgspec.json.decode(r)["partition"] == 1]
    stage = VenueStage(partitions_total=2)
    for r in [*(r for r in records if r not in late), *marks]:
        stage.handle(r)
    assert "prices.late" not in stage.report()
    assert "windows.late" not in stage.report()
    for r in late:
        stage.handle(r)
    report = stage.report()
    assert report["prices.late"] > 0
    assert report["windows.late"] > 0


def test_malformed_flows_records_are_counted_not_fatal() -> None:
    stage = VenueStage()
    for value in (None, b"", b"{", b"[1]", b'{"schema": "flows/1"}',
                  b'{"schema": "watermark/1", "venue": "v"}'):
        assert stage.handle(value) == VenueOutput()
    assert stage.counts["malformed"] == 6


def test_a_registry_entry_without_venue_holds_for_venues_seen_later() -> None:
    """``venue`` is optional in the registry (DESIGN §3.2): an entry without one holds for every
    venue, including one whose first summary comes after the entry (it used to be lost)."""
    stage = VenueStage()
    stage.registry(encode(Agent(agent_id="a1", owner="o1", created_ts=100.0)))
    stage.registry(encode(Agent(agent_id="a1", funded_by="f1", venue="X")))
    stage.registry(b"{not json")
    x, y = stage.venue("X"), stage.venue("Y")
    assert x is not None
    assert y is not None
    assert x.facts("a1") == ("o1", "f1", 100.0, None)  # its own facts, filled in
    assert y.facts("a1") == ("o1", None, 100.0, None)
    assert stage.counts["bad_agent"] == 1


def test_registry_facts_are_bounded_once_not_per_venue() -> None:
    stage = VenueStage(agents=AgentBook(max_entries=1000))
    for v in range(50):
        assert stage.venue(f"V{v}") is not None
    for i in range(5000):
        stage.registry(encode(Agent(agent_id=f"junk{i}", owner="o")))
    assert len(stage.agents) == 1000
    assert stage.report()["registry.dropped"] == 4000
    assert all(ms.registry is stage.agents for ms in stage.venues.values())


def test_a_snapshot_restores_the_stage_and_refuses_another_version() -> None:
    stage = VenueStage()
    stage.registry(encode(Agent(agent_id="a1", owner="o1")))
    for r in flows(1)[:200]:
        stage.handle(r)
    back = restore_stage(snapshot_stage(stage))
    ms = next(iter(back.venues.values()))
    assert ms.registry is back.agents  # still one book shared by the venues
    assert ms.facts("a1") == ("o1", None, None, None)
    old = zlib.compress(pickle.dumps(stage), 3)  # the unversioned form of earlier releases
    with pytest.raises(ValueError, match="version"):
        restore_stage(old)


def test_a_partition_assigned_later_gets_every_registry_entry_read_so_far(tmp_path: Path) -> None:
    """The stage-2 worker keeps what it read of ``agents``: a ``flows`` partition assigned (or
    rolled back) after an entry arrived still knows it, whether it starts fresh or from a
    checkpoint written before the entry."""
    worker = VenueWorker(Settings(data_dir=tmp_path))
    early = worker.start_fresh(0, 0)
    record = SimpleNamespace(partition=0, value=encode(Agent(agent_id="a1", owner="o1")))
    worker._registry({TopicPartition("agents", 0): [record]})
    assert worker.stages[0].agents.facts("X", "a1") == ("o1", None, None, None)
    worker.drop(0)
    worker.start_fresh(1, 0)
    worker.restore(0, early)  # a checkpoint from before the entry
    for p in (0, 1):
        assert worker.stages[p].agents.facts("X", "a1") == ("o1", None, None, None)


def test_a_checkpoint_that_cannot_be_read_is_reported_and_the_partition_still_read(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A checkpoint from another version (or otherwise unreadable) must not leave its partition
    unowned, which would blind the stage: it starts without it, from the committed offset."""
    import asyncio

    class Store:
        async def load(self, p: int) -> tuple[bytes, int]:
            return zlib.compress(pickle.dumps(VenueStage()), 3), 7  # unversioned: refused

    class Consumer:
        seeks: dict[int, int] = {}

        def seek(self, tp: TopicPartition, offset: int) -> None:
            self.seeks[tp.partition] = offset

        async def committed(self, tp: TopicPartition) -> int:
            return 5

    worker = VenueWorker(Settings(data_dir=tmp_path))
    worker.store, worker.consumer = Store(), Consumer()  # type: ignore[assignment]
    asyncio.run(worker.assigned([TopicPartition("flows", 0)]))
    assert worker.next_offset(0) == 5
    assert worker.consumer.seeks == {0: 5}
    assert (worker.counters.unreadable, worker.counters.restored) == (1, 0)
    assert "cannot be restored" in caplog.text


def test_stage2_reads_only_flows_records_sealed_with_the_deployments_key(tmp_path: Path) -> None:
    """Writing to ``flows`` is not enough to steer stage 2 (streams.sealed): a forged watermark
    far ahead, handed straight to the stage, closes every window, so the real summaries come
    late and are dropped; the worker ignores and counts it."""
    import asyncio

    records = flows(1)
    want = metrics(records, 1)
    assert want
    venue = msgspec.json.decode(records[0])["venue"]
    forged = encode({"schema": "watermark/1", "venue": venue, "partition": 0,
                     "watermark": 1e12})
    blind = VenueStage()
    blind.handle(forged)
    closed = [m for r in records for m in blind.handle(r).metrics]
    assert len(closed) < len(want)  # the attack works on an unguarded stage
    assert blind.report()["windows.late"] > 0

    worker = VenueWorker(Settings(data_dir=tmp_path))
    worker.sink, worker.key = MemorySink(), b"k" * 32  # type: ignore[assignment]
    worker.start_fresh(0, 0)
    values = [forged, seal(b"another deployment's key", forged)]
    values += [seal(worker.key, r) for r in records]
    asyncio.run(worker._handle(0, [SimpleNamespace(offset=i, value=v)
                                   for i, v in enumerate(values)]))
    assert worker.unsealed == 2
    sent = [msgspec.json.decode(v) for t, _, v in worker.sink.sent
            if t == worker.settings.topics.structure]
    assert len(sent) == len(want)
    assert worker.next_offset(0) == len(values)
