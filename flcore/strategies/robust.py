"""Byzantine-robust aggregation (Yin et al., 2018): a few poisoned updates cannot drag
the model far, because each coordinate ignores the extremes. Unweighted, so a client
cannot buy influence by claiming many examples."""

from __future__ import annotations

from flcore.aggregation import coordinate_median, trimmed_mean
from flcore.strategies import Strategy, register


@register
class Median(Strategy):
    """Coordinate-wise median of the client weights."""

    name = "median"

    def aggregate(self, current, updates, state):
        return coordinate_median([w for w, _ in updates]), {}


@register
class TrimmedMean(Strategy):
    """Coordinate-wise mean after dropping the ``trim_fraction`` largest and smallest values."""

    name = "trimmed_mean"

    def aggregate(self, current, updates, state):
        return trimmed_mean([w for w, _ in updates], self.cfg.trim_fraction), {}
