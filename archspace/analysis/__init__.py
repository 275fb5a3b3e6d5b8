"""Study analysis: pure metric functions (this package) apart from their plots."""

from .metrics import (
    DIVERGED_ERROR, Scatter, complexity_weights, delta_edf, edf, generalization, length_gaps, optimizer_gaps,
    ranking, scatter,
)

__all__ = ["DIVERGED_ERROR", "Scatter", "complexity_weights", "delta_edf", "edf", "generalization", "length_gaps",
           "optimizer_gaps", "ranking", "scatter"]
