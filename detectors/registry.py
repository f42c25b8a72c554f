"""What the optional agent registry says, merged per agent and bounded.

A registry entry (DESIGN §3.2) may name a ``venue`` or not; an entry without one holds for every
venue, including venues first seen after it arrived. :class:`AgentBook` keeps the facts of each
(venue, agent) — venue ``None`` for the venue-less ones — and answers for a venue with its own
facts filled in from the venue-less ones. Later entries fill in, never erase, earlier ones, so
applying the same entries again (after a restore or a rebalance) changes nothing.

Bounded: at most ``max_entries`` (venue, agent) facts, least recently updated dropped first
(``dropped`` counts them), so a flood of registry ids costs memory once, not per venue.

>>> book = AgentBook(max_entries=3)
>>> book.observe(None, "a", AgentFacts("o", None, None, None))
>>> book.observe("X", "a", AgentFacts(None, "f", 5.0, None))
>>> book.facts("X", "a")
AgentFacts(owner='o', funded_by='f', created_ts=5.0, kind=None)
>>> book.facts("Y", "a")
AgentFacts(owner='o', funded_by=None, created_ts=None, kind=None)
>>> book.facts("X", "b") is None
True
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from detectors.venue_base import AgentFacts

__all__ = ["AgentBook", "merge_facts"]


def merge_facts(old: AgentFacts | None, new: AgentFacts) -> AgentFacts:
    """``new`` with its missing fields taken from ``old``."""
    if old is None:
        return new
    return AgentFacts(new.owner or old.owner, new.funded_by or old.funded_by,
                      old.created_ts if new.created_ts is None else new.created_ts,
                      new.kind or old.kind)


class AgentBook:
    """Registry facts by (venue or ``None``, agent id), merged and bounded (module docs)."""

    __slots__ = ("_facts", "dropped", "max_entries")

    def __init__(self, max_entries: int = 200_000) -> None:
        self.max_entries = max_entries
        self.dropped = 0
        self._facts: OrderedDict[tuple[str | None, str], AgentFacts] = OrderedDict()

    def __len__(self) -> int:
        return len(self._facts)

    def __iter__(self) -> Iterator[tuple[str | None, str, AgentFacts]]:
        for (venue, agent), facts in self._facts.items():
            yield venue, agent, facts

    def observe(self, venue: str | None, agent: str, facts: AgentFacts) -> None:
        key = (venue or None, agent)
        self._facts[key] = merge_facts(self._facts.pop(key, None), facts)
        while len(self._facts) > self.max_entries:
            self._facts.popitem(last=False)
            self.dropped += 1

    def update(self, other: AgentBook) -> None:
        """Apply every entry of ``other`` (in its order) to this book."""
        for venue, agent, facts in other:
            self.observe(venue, agent, facts)

    def facts(self, venue: str, agent: str) -> AgentFacts | None:
        """What the registry says of ``agent`` on ``venue`` (``None``: nothing)."""
        general = self._facts.get((None, agent))
        own = self._facts.get((venue, agent))
        if own is None:
            return general
        return merge_facts(general, own)
