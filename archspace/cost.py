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


class Tally:
    """A running sum of params, flops and acts.

    A block's cost adds each of its layers into one tally and makes one :class:`Cost` at the
    end, so costing a stage allocates no object per layer. The layer formulas live here, in
    the tally's methods; the functions below (:func:`conv`, :func:`linear`, ...) return them as
    a :class:`Cost` for one layer.
    """

    __slots__ = ("params", "flops", "acts")

    def __init__(self) -> None:
        self.params = self.flops = self.acts = 0

    def cost(self) -> Cost:
        c = _new(Cost)  # _make, without its call: one per part costed
        _set_params(c, self.params)
        _set_flops(c, self.flops)
        _set_acts(c, self.acts)
        return c

    def add(self, cost: "Cost | Tally", times: int = 1) -> None:
        """Add another cost (or tally) ``times`` times."""
        self.params += cost.params * times
        self.flops += cost.flops * times
        self.acts += cost.acts * times

    def conv(self, cin: int, cout: int, kernel: int, h_out: int, w_out: int, groups: int = 1,
             bias: bool = False) -> None:
        """A 2-D convolution producing a ``cout × h_out × w_out`` map."""
        weights = cout * (cin // groups) * kernel * kernel
        self.params += weights + (cout if bias else 0)
        self.flops += weights * h_out * w_out
        self.acts += cout * h_out * w_out

    def linear(self, tokens: int, din: int, dout: int, bias: bool = True) -> None:
        """A linear layer applied to ``tokens`` vectors."""
        self.params += din * dout + (dout if bias else 0)
        self.flops += tokens * din * dout
        self.acts += tokens * dout

    def attention_products(self, heads: int, n_q: int, n_kv: int, head_dim: int) -> None:
        """Q·Kᵀ and A·V for ``heads`` heads: two products of ``n_q × n_kv × head_dim`` each."""
        self.flops += 2 * heads * n_q * n_kv * head_dim
        self.acts += heads * n_q * n_kv + heads * n_q * head_dim

    def head_mixing(self, heads: int, n_q: int, n_kv: int, times: int = 1) -> None:
        """A linear map across heads applied to every attention logit (talking heads)."""
        self.params += (heads * heads + heads) * times
        self.flops += heads * heads * n_q * n_kv * times
        self.acts += heads * n_q * n_kv * times


def tallied(part, *size: int):
    """``part.add_cost`` into a fresh tally: ``(Cost, *what add_cost returned)`` (the output size
    of a unit or block, nothing for a plan costed at its own size) — one layer's or block's
    :class:`Cost` where the caller wants it alone."""
    t = Tally()
    out = part.add_cost(t, *size)
    return t.cost() if out is None else (t.cost(), *out)


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
    """A 2-D convolution producing a ``cout × h_out × w_out`` map (:meth:`Tally.conv`)."""
    t = Tally()
    t.conv(cin, cout, kernel, h_out, w_out, groups, bias)
    return t.cost()


def linear(tokens: int, din: int, dout: int, bias: bool = True) -> Cost:
    """A linear layer applied to ``tokens`` vectors (:meth:`Tally.linear`)."""
    t = Tally()
    t.linear(tokens, din, dout, bias)
    return t.cost()


def params(n: int) -> Cost:
    """Learnable elements with no flops (norm gains, tables, tokens, layer scale)."""
    return _make(n, 0, 0)


def attention_products(heads: int, n_q: int, n_kv: int, head_dim: int) -> Cost:
    """Q·Kᵀ and A·V for ``heads`` heads (:meth:`Tally.attention_products`)."""
    t = Tally()
    t.attention_products(heads, n_q, n_kv, head_dim)
    return t.cost()


def head_mixing(heads: int, n_q: int, n_kv: int) -> Cost:
    """A linear map across heads applied to every attention logit (:meth:`Tally.head_mixing`)."""
    t = Tally()
    t.head_mixing(heads, n_q, n_kv)
    return t.cost()
