"""Analytic cost primitives: params, flops (multiply-adds) and activations.

Conventions (see ``docs/cost.md``):

* ``flops`` are multiply-adds: one fused multiply-add counts once. Convolutions, linear
  layers, the attention products Q·Kᵀ and A·V, and talking-heads mixing are counted. Bias
  additions, norms, activations, softmax, pooling, residual additions and position-embedding
  additions are not.
* ``params`` counts every learnable tensor element.
* ``acts`` counts the output elements of every convolution, linear layer and attention
  product (the pycls / "Early Convolutions" convention).

The block modules compute their cost from the same shape numbers they are built from,
with these functions, so no module has to be built to know a network's cost.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Cost:
    """Params, multiply-add flops and activations of a part of a network."""

    params: int = 0
    flops: int = 0
    acts: int = 0

    def __add__(self, other: "Cost") -> "Cost":
        return _make(self.params + other.params, self.flops + other.flops, self.acts + other.acts)

    def __mul__(self, times: int) -> "Cost":
        return _make(self.params * times, self.flops * times, self.acts * times)

    __rmul__ = __mul__

    def as_dict(self) -> dict[str, int]:
        return {"params": self.params, "flops": self.flops, "acts": self.acts}


_new = object.__new__
_set_params = Cost.__dict__["params"].__set__
_set_flops = Cost.__dict__["flops"].__set__
_set_acts = Cost.__dict__["acts"].__set__


def _make(params: int, flops: int, acts: int) -> Cost:
    """``Cost(params, flops, acts)`` without the frozen dataclass's ``__init__`` (lowering makes
    tens of costs per stage; this sets the same three slots in about half the time)."""
    c = _new(Cost)
    _set_params(c, params)
    _set_flops(c, flops)
    _set_acts(c, acts)
    return c


ZERO = Cost()


def total(costs) -> Cost:
    """Sum of an iterable of costs."""
    p = f = a = 0
    for c in costs:
        p += c.params
        f += c.flops
        a += c.acts
    return _make(p, f, a)


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution or pooling along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


def conv(cin: int, cout: int, kernel: int, h_out: int, w_out: int, groups: int = 1, bias: bool = False) -> Cost:
    """A 2-D convolution producing a ``cout × h_out × w_out`` map."""
    weights = cout * (cin // groups) * kernel * kernel
    return _make(weights + (cout if bias else 0), weights * h_out * w_out, cout * h_out * w_out)


def linear(tokens: int, din: int, dout: int, bias: bool = True) -> Cost:
    """A linear layer applied to ``tokens`` vectors."""
    return _make(din * dout + (dout if bias else 0), tokens * din * dout, tokens * dout)


def params(n: int) -> Cost:
    """Learnable elements with no flops (norm gains, tables, tokens, layer scale)."""
    return _make(n, 0, 0)


def attention_products(heads: int, n_q: int, n_kv: int, head_dim: int) -> Cost:
    """Q·Kᵀ and A·V for ``heads`` heads: two products of ``n_q × n_kv × head_dim`` each."""
    return _make(0, 2 * heads * n_q * n_kv * head_dim, heads * n_q * n_kv + heads * n_q * head_dim)


def head_mixing(heads: int, n_q: int, n_kv: int) -> Cost:
    """A linear map across heads applied to every attention logit (talking heads)."""
    return _make(heads * heads + heads, heads * heads * n_q * n_kv, heads * n_q * n_kv)
