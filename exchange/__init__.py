"""A reference exchange for machine-to-machine markets that obeys the surveillance halts.

- :mod:`exchange.book` -- a continuous double-auction order book per instrument (price-time
  priority, limit and market orders, cancels, self-trade prevention) with a reopening call
  auction for halts.
- :mod:`exchange.auction` -- the pure single-price uncross rule of that auction.
- :mod:`exchange.halts` -- :class:`~exchange.halts.HaltBook`, the pure rules for the ``halts``
  topic (DESIGN §3.6: per-key ``seq``, ``"*"`` market-wide, fail-safe on a silent feed), and
  :class:`~exchange.halts.HaltSubscriber`, the kafka-python client any exchange can embed.
- :mod:`exchange.venue` -- :class:`~exchange.venue.Exchange`, the service that in-process agents
  trade on: it checks the halt state before matching, reopens by auction and publishes its
  trades to ``trades`` in batches.

Nothing here reads a wall clock for event time: the caller (a simulator, a live loop) passes it.
"""

from __future__ import annotations

__all__: list[str] = []
