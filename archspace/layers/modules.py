"""The torch modules of the layers: norms and activations by name, conv-norm-act, drop path,
layer scale, MLP, squeeze-excitation, pooling, attention, position embedding, class token.

Their plans and analytic costs live beside the names that import them without torch
(:mod:`.common`, :mod:`.norms`, :mod:`.attention`); this module is imported only where a
network is built.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attention_cost, class_attention_cost, position_embedding_cost, relative_bias_cost
from .common import ConvUnit, mlp_cost, se_cost, shortcut_cost

# --- norms and activations --------------------------------------------------------------


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class BatchNormTokens(nn.BatchNorm1d):
    """BatchNorm over the channels of (N, L, C) tokens."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def _identity(channels: int) -> nn.Module:
    return nn.Identity()


def _ln(channels: int) -> nn.Module:
    return nn.LayerNorm(channels, eps=1e-6)


def _ln2d(channels: int) -> nn.Module:
    return LayerNorm2d(channels, eps=1e-6)


MAP_NORMS = {"batchnorm": nn.BatchNorm2d, "layernorm": _ln2d, "none": _identity}
TOKEN_NORMS = {"batchnorm": BatchNormTokens, "layernorm": _ln, "none": _identity}
ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "none": nn.Identity,
}


def map_norm(name: str, channels: int) -> nn.Module:
    """A norm for (N, C, H, W) maps by name."""
    return MAP_NORMS[name](channels)


def token_norm(name: str, channels: int) -> nn.Module:
    """A norm for (N, L, C) tokens by name."""
    return TOKEN_NORMS[name](channels)


def act(name: str, inplace: bool = False) -> nn.Module:
    """An activation by name. ``inplace``: the input is a fresh tensor that nothing else reads
    or saved for its backward pass (a convolution's, a norm's or a residual sum's output), so a
    ReLU may overwrite it: one pass over the map instead of a new one (ResNet-50: 1% of a CPU
    training step)."""
    return nn.ReLU(inplace=True) if inplace and name == "relu" else ACTIVATIONS[name]()


# --- common layers ----------------------------------------------------------------------


def _linear_flops(x_shape, weight_shape, *args, **kwargs) -> int:
    """``torch.utils.flop_counter``'s count for oneDNN's linear: ``addmm``'s, 2 per multiply-add."""
    rows = 1
    for size in x_shape[:-1]:
        rows *= size
    return 2 * rows * x_shape[-1] * weight_shape[0]


def _onednn_linear_op():
    """torch's oneDNN linear (what inductor's cpu fusions call), registered with the flop counter
    so that a measured count sees it as ``addmm``; None where torch was built without oneDNN."""
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return None
    op = torch.ops.mkldnn._linear_pointwise
    from torch.utils import flop_counter

    if op not in flop_counter.flop_registry:
        flop_counter.register_flop_formula(op)(_linear_flops)
    return op


_ONEDNN_LINEAR = _onednn_linear_op()
ONEDNN_MIN_MACS = 1 << 26
"""The smallest product (rows × in × out multiply-adds) :func:`linear` runs on oneDNN: below it
the gain per product is under the cost of the extra autograd node (a layer's forward and
backward: 0.92-1.03× at 20-60M, 1.06-1.36× from 75M; ``benchmarks/linear_kernels.py``)."""


class _OneDnnLinear(torch.autograd.Function):
    """``F.linear`` whose forward pass and input gradient run on oneDNN's matrix multiply; the
    weight gradient is torch's (MKL's) ``mm``, faster there."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        rows = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(rows, weight)
        ctx.has_bias, ctx.shape = bias is not None, x.shape
        y = _ONEDNN_LINEAR(rows, weight, bias, "none", [], "")
        return y.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        rows, weight = ctx.saved_tensors
        grad = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _ONEDNN_LINEAR(grad, weight.t(), None, "none", [], "").view(ctx.shape)
        if ctx.needs_input_grad[1]:
            grad_w = grad.t().mm(rows)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear``, with the same values (to float rounding) and gradients; while training on
    the cpu (gradients on) in fp32, eager and without autocast, the forward pass and input
    gradient of a product of at least :data:`ONEDNN_MIN_MACS` multiply-adds run on oneDNN.

    torch's cpu ``mm`` is MKL's, which on AMD processors runs without AVX-512; oneDNN picks its
    kernels by the processor's instruction sets alone. On this project's 2-core AMD EPYC, for
    the token matrices of ViT/DeiT, CaiT, ConvNeXt and CoAtNet blocks (tens to thousands of rows
    of 96-1536 channels), the forward product runs 1.05-1.4x and the input gradient 1.05-1.7x
    faster; the weight gradient (the transposed product over the rows) is mostly slower there
    and stays on MKL (``benchmarks/linear_kernels.py``). Elsewhere (an accelerator, bf16,
    autocast, ``torch.compile``, a trace, and without gradients: evaluation and measured flops,
    where imported weights give the logits torch computes) it is ``F.linear``; the modules call
    it in train mode only."""
    if (_ONEDNN_LINEAR is None or not _eager_cpu_grad(x) or not (x.requires_grad or weight.requires_grad)
            or x.dtype != torch.float32 or weight.dtype != torch.float32 or torch.jit.is_tracing()
            or x.numel() * weight.shape[0] < ONEDNN_MIN_MACS):
        return F.linear(x, weight, bias)
    return _OneDnnLinear.apply(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` (the same parameters and function), computed by :func:`linear` in train
    mode; in eval mode (evaluation, export) by ``F.linear``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (linear if self.training else F.linear)(x, self.weight, self.bias)


class _DepthwiseConv(torch.autograd.Function):
    """A depthwise convolution whose weight gradient is a grouped convolution: each (sample,
    channel) plane of the input convolved with its plane of the output gradient (dilated by the
    stride), summed over the batch. The forward pass and the input gradient are torch's own."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.has_bias, ctx.stride, ctx.padding = bias is not None, stride, padding
        return F.conv2d(x, weight, bias, stride, padding, 1, weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        channels, kh, kw = weight.shape[0], weight.shape[2], weight.shape[3]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(grad, x, weight, None, ctx.stride, ctx.padding, [1, 1],
                                                         False, [0, 0], channels, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            b, _, h, w = x.shape
            planes = x.transpose(0, 1).reshape(1, channels * b, h, w)
            kernels = grad.transpose(0, 1).reshape(channels * b, 1, grad.shape[2], grad.shape[3])
            grad_w = F.conv2d(planes, kernels, None, 1, ctx.padding, ctx.stride, channels * b)[..., :kh, :kw]
            grad_w = grad_w.reshape(channels, b, kh, kw).sum(1, keepdim=True)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` with ``groups`` = channels, an odd kernel and "same" padding (``kernel //
    2``), with the same parameters and function, trained faster on the cpu where torch is slow.

    Two things torch does slowly there, measured per training step:

    - A map smaller than the kernel's reach: the taps that only ever see padding multiply zeros.
      The kernel is cropped to the taps that reach the map (a 1×1 map keeps the centre: a
      per-channel scale, done as one). ConvNeXt's 7×7 on its last 2×2 map, MBConv's 3×3 on a
      1×1 map: 10-30 ms per convolution in torch, under 1 ms cropped.
    - The weight gradient of a large kernel (5×5 or more), or of a kernel larger than its map:
      tens of ms (a 4×4 map of 384 channels, 7×7: 40× its forward pass; a 2×2 map of 320
      channels, 3×3: 8 ms). It is taken as a grouped convolution (:class:`_DepthwiseConv`),
      1.5-10× faster. For 3×3 on larger maps torch's own is faster, and runs.

    The cropped taps get a zero gradient, as they do in torch. Elsewhere (an accelerator,
    autocast, ``torch.compile``, eval mode or no gradient: evaluation and measured flops count
    the whole kernel, as the analytic cost does) torch's own path runs on the whole kernel."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        kh, kw = self.kernel_size
        # checked once: the paths below hold for odd kernels with "same" zero padding, no dilation
        self.croppable = (self.groups == self.in_channels == self.out_channels and kh % 2 == 1 and kw % 2 == 1
                          and self.padding == (kh // 2, kw // 2) and self.dilation == (1, 1)
                          and self.padding_mode == "zeros")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.croppable or not _eager_cpu_training(x, self):
            return super().forward(x)
        ph, pw = self.padding
        h, w = x.shape[-2:]
        rh, rw = min(ph, h - 1), min(pw, w - 1)  # the reach that sees the map
        weight = self.weight
        if (rh, rw) != (ph, pw):
            weight = weight[:, :, ph - rh:ph + rh + 1, pw - rw:pw + rw + 1]
        if (h, w) == (1, 1):  # the centre tap alone, whatever the stride
            y = x * weight.reshape(1, -1, 1, 1)
            return y if self.bias is None else y + self.bias.reshape(1, -1, 1, 1)
        ch, cw = 2 * rh + 1, 2 * rw + 1
        if max(ch, cw) >= 5 or h < ch or w < cw:
            return _DepthwiseConv.apply(x, weight, self.bias, list(self.stride), [rh, rw])
        return F.conv2d(x, weight, self.bias, self.stride, (rh, rw), 1, self.groups)


def _channels_last(x: torch.Tensor) -> bool:
    """A map stored channels-last (and not also plain contiguous: a 1×1 map is both)."""
    return x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _eager_cpu_grad(x: torch.Tensor) -> bool:
    """On the cpu with gradients on, eager, without autocast: where the cpu training paths of
    this module may run (:func:`linear`, and the convolutions through :func:`_eager_cpu_training`)."""
    return (x.device.type == "cpu" and torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling())


def _eager_cpu_training(x: torch.Tensor, module: nn.Module) -> bool:
    """Where the cpu paths of :class:`DepthwiseConv2d`, :class:`DenseConv2d` and
    :class:`PointwiseConv2d` run: training (train mode, gradients on) on the cpu, eager, without
    autocast."""
    return module.training and _eager_cpu_grad(x)


class DenseConv2d(nn.Conv2d):
    """``nn.Conv2d`` (``groups`` 1) with an odd kernel of 3 or more and "same" padding, with the
    same parameters and function, trained faster on the cpu on the smallest maps.

    There torch's convolution is slow: ResNet-50's 3×3 convolutions of 512 channels on its 2×2
    maps (64 px input) run at ~30 GFLOP/s, a third of their rate on larger maps, and most taps
    multiply padding. On the cpu while training (as :class:`DepthwiseConv2d`):

    - a 1×1 input map sees the kernel's centre alone: a linear map of the channels;
    - an output map of at most 2×2 is one matrix product of the kernel with the input's
      patches (``unfold``), the kernel first cropped to the taps that reach the map.

    ResNet-50's last-stage 3×3 convolutions at 64 px: 47 → 25 ms per training step each (2×2),
    38 → 25 ms (4×4 → 2×2, stride 2). Larger maps, and everywhere else (an accelerator,
    autocast, ``torch.compile``, eval mode or no gradient: evaluation and measured flops count
    the whole kernel), torch's own runs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        kh, kw = self.kernel_size
        self.small_maps = (self.groups == 1 and kh % 2 == 1 and kw % 2 == 1 and min(kh, kw) >= 3
                           and self.padding == (kh // 2, kw // 2) and self.dilation == (1, 1)
                           and self.padding_mode == "zeros")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.small_maps or not _eager_cpu_training(x, self):
            return super().forward(x)
        n, _, h, w = x.shape
        ph, pw = self.padding
        sh, sw = self.stride
        ho, wo = (h + 2 * ph - self.kernel_size[0]) // sh + 1, (w + 2 * pw - self.kernel_size[1]) // sw + 1
        if ho * wo > 4:
            return super().forward(x)
        rh, rw = min(ph, h - 1), min(pw, w - 1)  # the reach that sees the map
        weight = self.weight[:, :, ph - rh:ph + rh + 1, pw - rw:pw + rw + 1]
        if (h, w) == (1, 1):  # the centre tap alone, whatever the stride: a 1×1 output
            y = linear(x.reshape(n, -1), weight.reshape(self.out_channels, -1), self.bias)
            return y.reshape(n, -1, 1, 1)
        cols = F.unfold(x, (2 * rh + 1, 2 * rw + 1), padding=(rh, rw), stride=self.stride)  # n, c·taps, ho·wo
        y = torch.matmul(weight.reshape(self.out_channels, -1), cols)
        if self.bias is not None:
            y = y + self.bias.reshape(1, -1, 1)
        y = y.reshape(n, -1, ho, wo)
        return y.contiguous(memory_format=torch.channels_last) if _channels_last(x) else y


class PointwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` with a 1×1 kernel (``groups`` 1, no padding), with the same parameters and
    function, trained faster on the cpu on small maps.

    A 1×1 convolution is a linear map of each pixel's channels. torch's convolution runs it as
    one, but on few rows (batch × output pixels) its fixed cost dominates: on a 1×1 map it takes
    1.4-2.8× the time of the same product as :func:`linear` on the channels-last pixels
    (forward and backward; MBConv's squeeze-excitation and its convolutions on the last maps,
    ResNet-50's 1×1 convolutions of 512-2048 channels on 2×2 maps at 64 px, 1.2-1.5×), about
    even from 512 rows and slower from ~1000. So while training on the cpu (as
    :class:`DepthwiseConv2d`), on at most :attr:`MAX_ROWS` rows of a channels-last map (or a
    1×1 one), the stride taken by slicing, it runs as :func:`linear`; elsewhere torch's own."""

    MAX_ROWS = 512

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.as_linear = (self.kernel_size == (1, 1) and self.groups == 1 and self.padding == (0, 0)
                          and self.dilation == (1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.as_linear or not _eager_cpu_training(x, self):
            return super().forward(x)
        n, _, h, w = x.shape
        sh, sw = self.stride
        ho, wo = (h - 1) // sh + 1, (w - 1) // sw + 1
        if n * ho * wo > self.MAX_ROWS or not (ho * wo == 1 or _channels_last(x)):
            return super().forward(x)
        if (sh, sw) != (1, 1):
            x = x[:, :, ::sh, ::sw]
        y = linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias)
        return y.permute(0, 3, 1, 2)


def conv_class(unit: ConvUnit) -> type[nn.Conv2d]:
    """:class:`DepthwiseConv2d` for a depthwise convolution, :class:`DenseConv2d` for a dense one
    of kernel 3 or more, :class:`PointwiseConv2d` for a 1×1 one, else ``nn.Conv2d``."""
    if unit.groups > 1 and unit.groups == unit.cin == unit.cout:
        return DepthwiseConv2d
    if unit.groups == 1 and unit.kernel == 1 and unit.pad == 0:
        return PointwiseConv2d
    return DenseConv2d if unit.groups == 1 and unit.kernel >= 3 else nn.Conv2d


class ConvNormAct(nn.Sequential):
    """Conv2d → norm → activation, from a :class:`ConvUnit`."""

    def __init__(self, unit: ConvUnit):
        super().__init__(
            conv_class(unit)(unit.cin, unit.cout, unit.kernel, unit.stride, unit.pad, groups=unit.groups,
                             bias=unit.bias),
            map_norm(unit.norm, unit.cout),
            act(unit.act, inplace=True),  # on the conv's or the norm's own output
        )


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability ``rate``.

    ``per_sample`` says the branch computes each sample on its own (no batch statistics): then
    :func:`residual_branch` runs the branch on the kept samples alone, saving the dropped
    samples' share of its compute (``rate`` of it on average) instead of computing them to
    multiply them by zero. The kept samples, the values and the gradients are the same either
    way; the keep draw is made on the cpu (a count known there, no wait on an accelerator).
    """

    def __init__(self, rate: float, per_sample: bool = False):
        super().__init__()
        self.rate = rate
        self.per_sample = per_sample

    def draw(self, batch: int) -> torch.Tensor:
        """Each sample's keep draw (1 kept, 0 dropped), on the cpu."""
        return torch.empty(batch).bernoulli_(1.0 - self.rate)

    def factor(self, x: torch.Tensor) -> torch.Tensor | None:
        """The per-sample factor (0 or ``1 / keep``, shaped to broadcast over ``x``) that drops
        and rescales ``x``'s samples, or ``None`` where nothing is dropped (eval, rate 0)."""
        if not self.training or self.rate == 0.0:
            return None
        keep = self.draw(x.shape[0]).div_(1.0 - self.rate)
        return keep.to(x.device, x.dtype, non_blocking=True).view((x.shape[0],) + (1,) * (x.ndim - 1))

    def kept(self, x: torch.Tensor) -> tuple[torch.Tensor | None, float] | None:
        """For :func:`residual_branch`: the indices of the kept samples of ``x`` (``None``: all
        kept) and the rescaling ``1 / keep``; ``None`` where the branch must run on the whole
        batch (eval, rate 0, a branch with batch statistics, under ``torch.compile``, or every
        sample dropped: an empty branch would leave its parameters out of the step)."""
        if not (self.training and self.per_sample and self.rate > 0.0) or torch.compiler.is_compiling():
            return None
        mask = self.draw(x.shape[0]).bool()
        n = int(mask.sum())
        if n == 0:
            return None
        index = None if n == x.shape[0] else mask.nonzero().squeeze(1).to(x.device, non_blocking=True)
        return index, 1.0 / (1.0 - self.rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.factor(x)
        return x if f is None else x * f

    def extra_repr(self) -> str:
        return f"rate={self.rate:.3f}" + (", per_sample" if self.per_sample else "")


class NoScale(nn.Identity):
    """An unused layer scale or drop path: the identity, with no factor for :func:`residual`."""

    def factor(self, x: torch.Tensor) -> None:
        return None

    def kept(self, x: torch.Tensor) -> None:
        return None


def drop_path(rate: float, per_sample: bool = False) -> nn.Module:
    return DropPath(rate, per_sample) if rate > 0 else NoScale()


def per_sample(*modules: nn.Module) -> bool:
    """Whether ``modules`` compute each sample on its own in training (no batch norm)."""
    return not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for module in modules for m in module.modules())


class LayerScale(nn.Module):
    """Per-channel learnable scale initialised to ``init`` (CaiT, ConvNeXt).

    ``channel_dim`` is -1 for tokens and 1 for (N, C, H, W) maps.
    """

    def __init__(self, channels: int, init: float, channel_dim: int = -1):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((channels,), float(init)))
        self.shape = (-1, 1, 1) if channel_dim == 1 else (channels,)

    def factor(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma.view(self.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor(x)


def layer_scale(channels: int, init: float | None, channel_dim: int = -1) -> nn.Module:
    return LayerScale(channels, init, channel_dim) if init else NoScale()


def residual(shortcut: torch.Tensor, branch: torch.Tensor, drop: nn.Module, scale: nn.Module | None = None
             ) -> torch.Tensor:
    """``shortcut + drop(scale(branch))`` in one pass over the tensors: the layer scale's gains
    and the drop path's per-sample factor multiply into one small tensor that ``addcmul``
    applies while adding (instead of a pass per multiply, a division and the addition)."""
    gains, keep = None if scale is None else scale.factor(branch), drop.factor(branch)
    factor = keep if gains is None else (gains if keep is None else gains * keep)
    return shortcut + branch if factor is None else torch.addcmul(shortcut, branch, factor)


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index]`` by ``index_select`` (with its backward, 3-4× faster than indexing, whose
    backward accumulates with ``index_put_``), a channels-last map kept channels-last."""
    if _channels_last(x):
        return x.permute(0, 2, 3, 1).index_select(0, index).permute(0, 3, 1, 2)
    return x.index_select(0, index)


def residual_branch(shortcut: torch.Tensor, x: torch.Tensor, branch, drop: nn.Module,
                    scale: nn.Module | None = None) -> torch.Tensor:
    """``residual(shortcut, branch(x), drop, scale)``, with the branch run on the samples the
    drop path keeps (see :meth:`DropPath.kept`) and added back at their rows; the dropped
    samples are the shortcut alone, as they would be."""
    kept = drop.kept(x)
    if kept is None:
        return residual(shortcut, branch(x), drop, scale)
    index, alpha = kept
    if index is not None:
        x = _take(x, index)
    y = branch(x)
    gains = None if scale is None else scale.factor(y)
    if gains is not None:
        y = y * gains
    if index is None:
        return torch.add(shortcut, y, alpha=alpha)
    # the sum in the branch's memory format, as ``shortcut + y`` would be (a channels-last
    # branch keeps the next block's convolutions on their channels-last kernels), and in the
    # promoted dtype (under autocast, a bf16 branch on an fp32 stream gives fp32, as ``+`` does)
    channels_last = _channels_last(y)
    dtype = torch.promote_types(shortcut.dtype, y.dtype)
    out = shortcut.to(dtype=dtype, memory_format=torch.channels_last if channels_last else torch.preserve_format,
                      copy=True)
    return out.index_add_(0, index, y.to(dtype), alpha=alpha)


class Mlp(nn.Module):
    """Linear → activation → linear on tokens."""

    cost = staticmethod(mlp_cost)

    def __init__(self, dim: int, hidden: int, act_name: str = "gelu", dim_out: int | None = None):
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.act = act(act_name)
        self.fc2 = Linear(hidden, dim_out or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SqueezeExcite(nn.Module):
    """Squeeze-excitation: global average → 1×1 reduce → SiLU → 1×1 expand → sigmoid gate."""

    cost = staticmethod(se_cost)

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.reduce = PointwiseConv2d(channels, reduced, 1)
        self.act = nn.SiLU()
        self.expand = PointwiseConv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))


POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def pool2x(kind: str) -> nn.Module:
    """A 2×2 stride-2 pooling by name."""
    return POOLS[kind](kernel_size=2, stride=2)


class Shortcut(nn.Sequential):
    """Residual shortcut of a resampling block: pool (stride 2) then 1×1 conv (width change)."""

    cost = staticmethod(shortcut_cost)

    def __init__(self, cin: int, cout: int, stride: int, pool: str):
        super().__init__(
            pool2x(pool) if stride == 2 else nn.Identity(),
            PointwiseConv2d(cin, cout, 1, bias=True) if cin != cout else nn.Identity(),
        )


# --- attention --------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _relative_index(h: int, w: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + h - 1
    dx = xs[:, None] - xs[None, :] + w - 1
    return dy * (2 * w - 1) + dx


class RelativePositionBias(nn.Module):
    """A learned bias per head for each 2-D offset: a ``(2H-1)·(2W-1)`` table (CoAtNet).

    At another resolution the table is resized bilinearly. Class tokens get zero bias.
    """

    cost = staticmethod(relative_bias_cost)

    def __init__(self, heads: int, grid: tuple[int, int]):
        super().__init__()
        self.grid = grid
        self.table = nn.Parameter(torch.zeros(heads, 2 * grid[0] - 1, 2 * grid[1] - 1))
        nn.init.trunc_normal_(self.table, std=0.02)

    def forward(self, size: tuple[int, int], prefix: int) -> torch.Tensor:
        h, w = size
        table = self.table
        if (h, w) != self.grid:
            table = F.interpolate(table[None], size=(2 * h - 1, 2 * w - 1), mode="bilinear", align_corners=False)[0]
        index = _relative_index(h, w).to(table.device)
        bias = table.flatten(1)[:, index]
        if prefix:
            bias = F.pad(bias, (prefix, 0, prefix, 0))
        return bias


class NoBias(nn.Module):
    """Stands in for a relative bias in absolute-position attention."""

    def forward(self, size: tuple[int, int], prefix: int) -> None:
        return None


EXPLICIT_KEYS = 160
EXPLICIT_ELEMENTS = 1 << 23


def attend(module: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
           bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.scaled_dot_product_attention(q, k, v, attn_mask=bias)``; while training on the cpu
    (as :class:`DenseConv2d`), for at most :data:`EXPLICIT_KEYS` keys and an attention map of at
    most :data:`EXPLICIT_ELEMENTS` entries, the same attention as explicit products and a
    softmax. Torch's cpu kernel (flash attention) is made for long sequences: forward and
    backward of DeiT-S's attention at 64 px (17 tokens, batch 32) take 3.0-4.3 ms in it against
    1.6 ms explicit, 1.3-1.9x faster explicit for 37-145 tokens; about even at 197 tokens (DeiT at
    224 px), 2x slower from ~256 keys, where torch's runs. Evaluation and measured flops use
    torch's kernel."""
    if not _explicit_attention(module, q, q.numel() // q.shape[-1], k.shape[-2]):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return _scaled_logits(q, k, bias).softmax(-1) @ v


def _explicit_attention(module: nn.Module, x: torch.Tensor, query_rows: int, keys: int) -> bool:
    """Whether attention of ``query_rows`` queries (over batch and heads) on ``keys`` keys runs
    as explicit products (:func:`attend`, :class:`_PackedAttention`) rather than torch's kernel."""
    return keys <= EXPLICIT_KEYS and query_rows * keys <= EXPLICIT_ELEMENTS and _eager_cpu_training(x, module)


def _scaled_logits(q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``(q / √d) @ kᵀ + bias`` with the scaling in a pass that is made anyway: with a bias, the
    addition's (``bias + scale · logits``); without, on the smaller of the queries and the logits."""
    scale = q.shape[-1] ** -0.5
    if bias is not None:
        return torch.add(bias, q @ k.transpose(-2, -1), alpha=scale)
    if k.shape[-2] < q.shape[-1]:
        return (q @ k.transpose(-2, -1)).mul_(scale)
    return (q * scale) @ k.transpose(-2, -1)


class Attention(nn.Module):
    """Multi-head self-attention on tokens with ``F.scaled_dot_product_attention``.

    ``qkv`` maps ``dim_in`` to ``3 × dim`` (so a downsampling block can widen), ``proj``
    maps ``dim`` to ``dim``. ``bias`` supplies an additive logit bias or ``None``.
    """

    cost = staticmethod(attention_cost)

    def __init__(self, dim_in: int, dim: int, heads: int, qkv_bias: bool, bias: nn.Module):
        super().__init__()
        self.heads = heads
        self.qkv = Linear(dim_in, 3 * dim, bias=qkv_bias)
        self.proj = Linear(dim, dim)
        self.bias = bias

    def _qkv(self, x: torch.Tensor):
        b, n, _ = x.shape
        return self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, x: torch.Tensor, size: tuple[int, int], prefix: int) -> torch.Tensor:
        bias = self.bias(size, prefix)
        b, n, _ = x.shape
        if _explicit_attention(self, x, b * self.heads * n, n):
            return self.proj(_PackedAttention.apply(self.qkv(x), bias, None, None, None, None, self.heads))
        q, k, v = self._qkv(x)
        if bias is not None:
            bias = bias.to(q.dtype)
        out = attend(self, q, k, v, bias)
        return self.proj(out.transpose(1, 2).flatten(2))

    def forward_prefix(self, x: torch.Tensor, size: tuple[int, int], prefix: int) -> torch.Tensor:
        """:meth:`forward`'s output for the first ``prefix`` tokens (the class tokens) alone:
        their queries against every token's keys and values. The same values as
        ``forward(x, size, prefix)[:, :prefix]`` without the other tokens' queries, attention
        rows and projections."""
        b, n, _ = x.shape
        dim = self.proj.in_features
        weight, bias = self.qkv.weight, self.qkv.bias
        q = linear(x[:, :prefix], weight[:dim], None if bias is None else bias[:dim])
        q = q.reshape(b, prefix, self.heads, -1).transpose(1, 2)
        kv = linear(x, weight[dim:], None if bias is None else bias[dim:])
        k, v = kv.reshape(b, n, 2, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        logit_bias = self.bias(size, prefix)
        if logit_bias is not None:
            logit_bias = logit_bias[..., :prefix, :].to(q.dtype)
        out = attend(self, q, k, v, logit_bias)
        return self.proj(out.transpose(1, 2).flatten(2))


class TalkingHeadsAttention(Attention):
    """Attention whose heads are mixed by learned linear maps before and after softmax (CaiT)."""

    def __init__(self, dim_in: int, dim: int, heads: int, qkv_bias: bool, bias: nn.Module):
        super().__init__(dim_in, dim, heads, qkv_bias, bias)
        self.mix_logits = nn.Linear(heads, heads)
        self.mix_weights = nn.Linear(heads, heads)

    def forward(self, x: torch.Tensor, size: tuple[int, int], prefix: int) -> torch.Tensor:
        bias, ml, mw = self.bias(size, prefix), self.mix_logits, self.mix_weights
        if _eager_cpu_training(x, self):
            return self.proj(_PackedAttention.apply(self.qkv(x), bias, ml.weight, ml.bias, mw.weight, mw.bias,
                                                    self.heads))
        q, k, v = self._qkv(x)
        if bias is None:  # the 1/√d scaling rides on the first head mixing's product
            logits = _mix_heads(ml.weight, ml.bias, q @ k.transpose(-2, -1), q.shape[-1] ** -0.5)
        else:
            logits = _mix_heads(ml.weight, ml.bias, _scaled_logits(q, k, bias))
        weights = _mix_heads(mw.weight, mw.bias, logits.softmax(-1))
        out = weights @ v
        return self.proj(out.transpose(1, 2).flatten(2))


def _mix_heads(weight: torch.Tensor, bias: torch.Tensor, t: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """The linear map (``weight``, ``bias``: heads × heads, heads) applied across the heads of
    ``t`` (batch, heads, ...): ``F.linear(t.movedim(1, -1), weight, bias).movedim(-1, 1)``, as one
    batched product of the weight with each sample's (heads, rest) rows. The permuted form copies
    the map twice and runs a matrix product with an inner size of the head count over
    queries·keys rows: CaiT's talking heads at 224 px, forward and backward, 2.7× slower.
    ``alpha`` scales ``t`` first."""
    b, h = t.shape[:2]
    out = torch.baddbmm(bias.view(1, h, 1), weight.expand(b, h, h), t.reshape(b, h, -1), alpha=alpha)
    return out.view(t.shape)


class _PackedAttention(torch.autograd.Function):
    """Multi-head attention from the packed ``qkv`` (batch, tokens, 3 · heads · d) to the heads'
    concatenated outputs (batch, tokens, heads · d), with an additive ``bias`` (heads, tokens,
    tokens) or ``None`` and, for talking heads (CaiT), the two head-mixing maps (``None``: plain
    attention), with a hand-written backward: what :class:`Attention` and
    :class:`TalkingHeadsAttention` compute while training on the cpu. The same products as the
    composed form (``tests/test_blocks.py``: values and gradients), with one layout copy each way
    (the queries, keys and values into one (3, batch, heads, tokens, d) block; their gradients
    written into one) instead of the composed form's copies around every product, its stacked
    gradients and a dozen autograd nodes. An attention layer with its projections, forward and
    backward, against the composed products: CaiT-XXS24's at 64 px (29 samples of 16 tokens),
    3.9 against 4.0-4.3 ms (fastest of 100), at 224 px (8 of 196) 18.5-19.4 against 19.6-21.5;
    medians of 40: DeiT-S's at 64 px (29 of 17) 13.2-13.5 against 13.4-14.0 ms, CoAtNet-0's
    relative attention at 64 px (29 of 16) 11.5-12.4 against 13.2-14.7 and at 224 px (8 of 49)
    39-44 against 47-48."""

    @staticmethod
    def forward(ctx, qkv, bias, w_logits, b_logits, w_weights, b_weights, heads: int):
        b, n, c = qkv.shape
        d = c // (3 * heads)
        bh, scale, talking = b * heads, d ** -0.5, w_logits is not None
        packed = qkv.reshape(b, n, 3, heads, d).permute(2, 0, 3, 1, 4).contiguous()
        q, k, v = (packed[i].view(bh, n, d) for i in range(3))
        logits = torch.bmm(q, k.transpose(1, 2)).view(b, heads, n * n)
        # the 1/√d rides on a pass made anyway: the bias's addition, else the first mixing's
        # product (alpha), else (plain attention, no bias) an in-place pass over the logits
        alpha = scale if bias is None and talking else 1.0
        if bias is not None:
            logits = torch.add(bias.reshape(-1, heads, n * n), logits, alpha=scale)
        elif not talking:
            logits.mul_(scale)
        mixed = _mix_heads(w_logits, b_logits, logits, alpha) if talking else logits
        attn = mixed.view(b, heads, n, n).softmax(-1)
        weights = _mix_heads(w_weights, b_weights, attn.view(b, heads, -1)) if talking else attn
        out = torch.bmm(weights.view(bh, n, n), v)
        ctx.save_for_backward(packed, attn, *((logits, weights, w_logits, w_weights) if talking else ()))
        ctx.alpha, ctx.bias_shape = alpha, None if bias is None else bias.shape
        return out.view(b, heads, n, d).transpose(1, 2).reshape(b, n, heads * d)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        packed, attn, *mixing = ctx.saved_tensors
        _, b, heads, n, d = packed.shape
        bh, scale = b * heads, d ** -0.5
        q, k, v = (packed[i].view(bh, n, d) for i in range(3))
        weights = mixing[1] if mixing else attn
        g_out = grad.reshape(b, n, heads, d).transpose(1, 2).reshape(bh, n, d)
        g_packed = torch.empty_like(packed)
        torch.bmm(weights.view(bh, n, n).transpose(1, 2), g_out, out=g_packed[2].view(bh, n, d))
        g_weights = torch.bmm(g_out, v.transpose(1, 2)).view(b, heads, n * n)
        g_wl = g_bl = g_ww = g_bw = None
        g_attn = g_weights
        if mixing:
            logits, _, w_logits, w_weights = mixing
            g_ww = torch.bmm(g_weights, attn.view(b, heads, n * n).transpose(1, 2)).sum(0)
            g_bw = g_weights.sum((0, 2))
            g_attn = torch.bmm(w_weights.t().expand(b, heads, heads), g_weights)
        g_logits = torch._softmax_backward_data(g_attn.view(b, heads, n, n), attn, -1, attn.dtype).view(b, heads, -1)
        if mixing:
            g_wl = torch.bmm(g_logits, logits.transpose(1, 2)).sum(0).mul_(ctx.alpha)
            g_bl = g_logits.sum((0, 2))
            g_logits = torch.bmm(w_logits.t().expand(b, heads, heads), g_logits)  # before the alpha
        g_bias = None
        if ctx.bias_shape is not None and ctx.needs_input_grad[1]:
            g_bias = g_logits.view(b, heads, n, n).sum_to_size(ctx.bias_shape).clone()
        g_scores = g_logits.view(bh, n, n).mul_(scale)
        torch.bmm(g_scores, k, out=g_packed[0].view(bh, n, d))
        torch.bmm(g_scores.transpose(1, 2), q, out=g_packed[1].view(bh, n, d))
        g_qkv = g_packed.permute(1, 3, 0, 2, 4).reshape(b, n, 3 * heads * d)
        return g_qkv, g_bias, g_wl, g_bl, g_ww, g_bw, None


class PositionEmbedding(nn.Module):
    """Learned absolute position embedding of a ``grid`` of patch tokens (ViT).

    Resized bilinearly when the input resolution differs from the spec's.
    """

    cost = staticmethod(position_embedding_cost)

    def __init__(self, dim: int, grid: tuple[int, int]):
        super().__init__()
        self.grid = grid
        self.pos = nn.Parameter(torch.zeros(1, grid[0] * grid[1], dim))
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        pos = self.pos
        if tuple(size) != self.grid:
            grid = pos.reshape(1, *self.grid, -1).permute(0, 3, 1, 2)
            pos = F.interpolate(grid, size=size, mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
        return tokens + pos


class NoPosition(nn.Module):
    def forward(self, tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return tokens


class ClassToken(nn.Module):
    """A learned class token, prepended where a stage inserts one.

    The token is repeated per sample rather than returned as an expanded view of the
    parameter: a view of a leaf made under ``no_grad`` has no autograd node, which breaks
    hooks that inspect module outputs (``torch.utils.flop_counter.FlopCounterMode``).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.token, std=0.02)

    def forward(self, cls: torch.Tensor | None, batch: int) -> torch.Tensor:
        return self.token.repeat(batch, 1, 1)


class KeepClassToken(nn.Module):
    """Passes on the class token a previous stage inserted (or none)."""

    def forward(self, cls: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        return cls


class ClassAttention(nn.Module):
    """CaiT class attention: the query comes from the class token only; keys and values
    from the class token and the patches."""

    cost = staticmethod(class_attention_cost)

    def __init__(self, dim: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.q = Linear(dim, dim, bias=qkv_bias)
        self.k = Linear(dim, dim, bias=qkv_bias)
        self.v = Linear(dim, dim, bias=qkv_bias)
        self.proj = Linear(dim, dim)

    def forward(self, z: torch.Tensor, prefix: int) -> torch.Tensor:
        b, n, d = z.shape
        split = lambda t: t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2)  # noqa: E731
        q = split(self.q(z[:, :prefix]))
        out = attend(self, q, split(self.k(z)), split(self.v(z)))
        return self.proj(out.transpose(1, 2).reshape(b, prefix, d))
