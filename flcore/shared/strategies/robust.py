"""Byzantine-robust aggregation (Yin et al., 2018): a few poisoned updates cannot drag
the model far, because each coordinate ignores the extremes. Unweighted, so a client
cannot buy influence by claiming many examples."""

from __future__ import annotations

from flcore.shared.aggregation import coordinate_median, trimmed_mean
from flcore.shared.strategies import Strategy, register, setting


@register
class Median(Strategy):
    """Coordinate-wise median of the client weights."""

    name = "median"
    blockwise = True
    asynchronous = False
    why_not_async = "the median's robustness needs the round's updates on one model, not a buffer of stale ones"

    def aggregate(self, current, updates, state, num_clients):
        return coordinate_median(updates), {}


@register
class TrimmedMean(Strategy):
    """Coordinate-wise mean after dropping the ``trim_fraction`` largest and smallest values."""

    name = "trimmed_mean"
    blockwise = True
    asynchronous = False
    why_not_async = "trimming needs the round's updates on one model, not a buffer of stale ones"
    trim_fraction: float = setting(0.1, 0.0, 0.49, "share of values dropped at each end")

    def aggregate(self, current, updates, state, num_clients):
        return trimmed_mean(updates, self.trim_fraction), {}
