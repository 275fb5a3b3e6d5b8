"""Study analysis: pure metric functions (this package) apart from their plots."""

from .metrics import (
    COMPLETED, DIVERGED_ERROR, STATUSES, Scatter, complexity_weights, delta_edf, edf, generalization, length_gaps,
    optimizer_gaps, ranking, scatter, size_spread, variant_summary, edf_bias,
)

__all__ = ["COMPLETED", "DIVERGED_ERROR", "STATUSES", "Scatter", "complexity_weights", "delta_edf", "edf",
           "generalization", "length_gaps", "optimizer_gaps", "ranking", "scatter", "size_spread", "variant_summary", "edf_bias"]
