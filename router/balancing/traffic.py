"""Weighted choice between deployments: smooth weighted round-robin (as nginx does).

Exact in every window of `sum(weights)` picks, not only in the long run, and
spreads a small share evenly instead of in bursts.
"""

from __future__ import annotations

from collections.abc import Mapping


class TrafficSplit:
    __slots__ = ("_current", "_names", "_only", "_total", "_weights")

    def __init__(self, weights: Mapping[str, int]) -> None:
        live = [(name, weight) for name, weight in sorted(weights.items()) if weight > 0]
        self._names = [name for name, _ in live]
        self._weights = [weight for _, weight in live]
        self._current = [0] * len(live)
        self._total = sum(self._weights)
        self._only = self._names[0] if len(self._names) == 1 else None  # one deployment takes it all

    def pick(self) -> str | None:
        """The next deployment name, or None when no deployment takes traffic."""
        if self._only is not None:
            return self._only
        if not self._names:
            return None
        current, weights = self._current, self._weights
        best = 0
        for i in range(len(current)):
            current[i] += weights[i]
            if current[i] > current[best]:
                best = i
        current[best] -= self._total
        return self._names[best]

    def __repr__(self) -> str:
        shares = ", ".join(f"{n}={w}" for n, w in zip(self._names, self._weights, strict=True))
        return f"TrafficSplit({shares})"
