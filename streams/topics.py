"""Topic names (with an optional prefix) and topic creation."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Topics"]


@dataclass(frozen=True)
class Topics:
    """The pipeline's topics.

    >>> Topics(prefix="venue1.").all()
    ('venue1.trades', 'venue1.agents', 'venue1.alerts', 'venue1.halts', 'venue1.trades.dlq', 'venue1.bars')
    """

    prefix: str = ""

    @property
    def trades(self) -> str:
        return f"{self.prefix}trades"

    @property
    def agents(self) -> str:
        return f"{self.prefix}agents"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}alerts"

    @property
    def halts(self) -> str:
        return f"{self.prefix}halts"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}trades.dlq"

    @property
    def bars(self) -> str:
        """One-second OHLCV bars per instrument, written by the worker for the store."""
        return f"{self.prefix}bars"

    def all(self) -> tuple[str, ...]:
        return (self.trades, self.agents, self.alerts, self.halts, self.dlq, self.bars)
