"""Tapes in and out, the simulated market, the backtest."""

from __future__ import annotations

__all__: list[str] = []
