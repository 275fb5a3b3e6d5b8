"""Every block and stem kind builds and trains on CPU at a small size; features, resizing,
drop path and class-token pooling behave as the design says."""

from __future__ import annotations

import pytest
import torch
from _specs import BLOCK_SPECS, CONV_STEM, NUM_CLASSES, STEM_SPECS, spec

from archspace import SpecError, compile_network, complexity, lower
from archspace.layers.attention import PositionEmbedding, RelativePositionBias
from archspace.layers.common import DropPath

BATCH = 2


def build(name: str, size: int = 32, **extra):
    torch.manual_seed(0)
    return compile_network(spec(**BLOCK_SPECS[name], size=size, **extra))


def train_step(model: torch.nn.Module, size: int) -> torch.Tensor:
    """One forward and backward pass in train mode; checks logits and every grad."""
    model.train()
    x = torch.randn(BATCH, 3, size, size, requires_grad=True)
    logits = model(x)
    assert logits.shape == (BATCH, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    logits.logsumexp(-1).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    params = list(model.named_parameters())
    assert params
    for name, p in params:
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    return logits


def check_features(model, size: int) -> list[torch.Tensor]:
    model.eval()
    with torch.no_grad():
        feats = model.forward_intermediates(torch.randn(BATCH, 3, size, size), intermediates_only=True)
    assert len(feats) == len(model.stages) == len(model.feature_info)
    for i, (f, info) in enumerate(zip(feats, model.feature_info)):
        assert info["module"] == f"stages.{i}"
        assert f.ndim == 4 and f.shape[0] == BATCH
        assert f.shape[1] == info["num_chs"]
        assert f.shape[2] == f.shape[3] == size // info["reduction"]
        assert torch.isfinite(f).all()
    return feats


@pytest.mark.parametrize("name", sorted(BLOCK_SPECS))
def test_block_kind_trains(name):
    model = build(name)
    train_step(model, 32)


@pytest.mark.parametrize("name", sorted(STEM_SPECS))
def test_stem_kind_trains(name):
    torch.manual_seed(0)
    s = spec(STEM_SPECS[name], [{"block": "mbconv", "depth": 1, "width": 32, "stride": 1},
                                {"block": "transformer", "depth": 1, "width": 32, "heads": 2}], size=32)
    model = compile_network(s)
    stem_out = model.stem(torch.randn(1, 3, 32, 32))
    assert stem_out.shape[1] == s.stem_width()
    train_step(model, 32)
    check_features(model, 32)


@pytest.mark.parametrize("name", sorted(BLOCK_SPECS))
def test_forward_features_match_feature_info(name):
    s = spec(**BLOCK_SPECS[name], size=32)
    model = compile_network(s)
    feats = check_features(model, 32)
    rows = complexity(s)["stages"]
    for f, row in zip(feats, rows):
        assert list(f.shape[1:]) == row["output"]


@pytest.mark.parametrize("name", ["transformer-relative", "transformer-relative-cls", "transformer-absolute",
                                  "class-attention", "mbconv-conv", "convnext"])
def test_runs_at_another_input_size(name):
    model = build(name, size=32)
    logits = train_step(model, 64)
    assert logits.shape == (BATCH, NUM_CLASSES)
    feats = check_features(model, 64)
    # the maps are twice as large as at the spec's size
    small = check_features(model, 32)
    for f, g in zip(feats, small):
        assert f.shape[2:] == (2 * g.shape[2], 2 * g.shape[3])


def test_relative_bias_table_is_resized():
    model = build("transformer-relative", size=32)
    biases = [m for m in model.modules() if isinstance(m, RelativePositionBias)]
    assert len(biases) == 3
    for m in biases:
        h, w = m.grid
        heads = m.table.shape[0]
        assert m.table.shape == (heads, 2 * h - 1, 2 * w - 1)
        # at the build size the bias is the table, indexed by 2-D offset
        at_grid = m((h, w), 0)
        assert at_grid.shape == (heads, h * w, h * w)
        assert torch.equal(at_grid[:, 0, 0], m.table[:, h - 1, w - 1])  # offset (0, 0)
        assert torch.equal(at_grid[:, 0, h * w - 1], m.table[:, 0, 0])  # offset (-(h-1), -(w-1))
        # at twice the size, a bilinearly resized table: (2H)²×(2W)² entries, constant stays constant
        big = m((2 * h, 2 * w), 1)
        assert big.shape == (heads, 4 * h * w + 1, 4 * h * w + 1)
        assert torch.all(big[:, 0, :] == 0) and torch.all(big[:, :, 0] == 0)  # class token: no bias
        with torch.no_grad():
            m.table.fill_(0.5)
        assert torch.allclose(m((2 * h, 2 * w), 0), torch.full((heads, 4 * h * w, 4 * h * w), 0.5))
    # the resized table still learns
    model.zero_grad()
    train_step(model, 64)
    assert all(m.table.grad.abs().sum() > 0 for m in biases)


def test_position_embedding_is_resized():
    model = build("transformer-absolute", size=32)
    (pos,) = [m for m in model.modules() if isinstance(m, PositionEmbedding)]
    assert pos.grid == (4, 4)
    assert pos.pos.shape == (1, 16, 64)
    tokens = torch.zeros(1, 64, 64)
    with torch.no_grad():
        pos.pos.copy_(torch.arange(64.0).expand(1, 16, 64))  # constant over positions
        out = pos(tokens, (8, 8))
    assert out.shape == (1, 64, 64)
    assert torch.allclose(out, torch.arange(64.0).expand(1, 64, 64))
    with torch.no_grad():
        same = pos(torch.zeros(1, 16, 64), (4, 4))
    assert torch.equal(same, pos.pos)
    model.zero_grad()
    train_step(model, 64)
    assert pos.pos.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["mbconv-conv", "transformer-relative", "class-attention", "convnext",
                                  "bottleneck"])
def test_drop_path_random_in_train_identical_in_eval(name):
    model = build(name, drop_path={"rate": 0.5, "schedule": "uniform"})
    assert any(isinstance(m, DropPath) for m in model.modules())
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a, b)
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        c, d = model(x), model(x)
    assert not torch.allclose(c, d)
    # without drop path the same train-mode passes agree (the difference above is drop path)
    plain = build(name)
    plain.train()
    with torch.no_grad():
        assert torch.allclose(plain(x), plain(x))


@pytest.mark.parametrize("shape, channel_dim", [((4, 5, 8), -1), ((4, 8, 3, 3), 1)])
@pytest.mark.parametrize("gains", [False, True])
@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_residual_is_shortcut_plus_dropped_scaled_branch(shape, channel_dim, gains, rate):
    # the one-pass residual (addcmul with the gains times the per-sample factor) against the
    # written-out arithmetic: the same values and the same gradients for every input and gain
    from archspace.layers.modules import drop_path, layer_scale, residual

    channels = shape[channel_dim]
    scale = layer_scale(channels, 0.3 if gains else None, channel_dim)
    if gains:
        with torch.no_grad():
            scale.gamma.uniform_(-1, 1)
    drop = drop_path(rate).train()
    torch.manual_seed(3)
    short, branch = torch.randn(shape, requires_grad=True), torch.randn(shape, requires_grad=True)
    torch.manual_seed(7)
    got = residual(short, branch, drop, scale)
    torch.manual_seed(7)
    mask = torch.empty((shape[0],) + (1,) * (len(shape) - 1)).bernoulli_(1 - rate) if rate else torch.ones(1)
    gamma = scale.gamma.view(scale.shape) if gains else torch.ones(1)
    want = short + branch * gamma * mask / (1 - rate)
    assert torch.allclose(got, want, atol=1e-6)
    if rate:
        assert 0 < (mask == 0).sum() < shape[0]  # some samples dropped, some kept (seeded)
    params = [short, branch] + ([scale.gamma] if gains else [])
    weights = torch.randn(shape)
    for a, b in zip(torch.autograd.grad((got * weights).sum(), params),
                    torch.autograd.grad((want * weights).sum(), params)):
        assert torch.allclose(a, b, atol=1e-5)
    drop.eval()
    assert torch.allclose(residual(short, branch, drop, scale), short + branch * gamma, atol=1e-6)


@pytest.mark.parametrize("name", ["transformer-relative", "class-attention", "convnext", "mbconv-conv",
                                  "bottleneck"])
def test_drop_path_on_kept_samples_alone_gives_the_masked_values_and_gradients(name):
    # a branch without batch statistics runs on the kept samples alone; the same draws give the
    # same logits and gradients as running it on the whole batch and multiplying by the mask
    model = build(name, drop_path={"rate": 0.5, "schedule": "uniform"}).train()
    drops = [m for m in model.modules() if isinstance(m, DropPath)]
    batch_norm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    subset = [d.per_sample for d in drops]
    assert any(subset) != (name in ("mbconv-conv", "bottleneck"))  # their branches hold batch norms
    assert batch_norm or all(subset)
    x = torch.randn(8, 3, 32, 32)
    results = []
    for on_kept in (True, False):
        for d, s in zip(drops, subset):
            d.per_sample = s and on_kept
        model.zero_grad()
        torch.manual_seed(5)
        logits = model(x)
        logits.logsumexp(-1).sum().backward()
        results.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                          if p.grad is not None}))
    (a, grads_a), (b, grads_b) = results
    assert torch.allclose(a, b, atol=1e-5)
    assert grads_a.keys() == grads_b.keys() == {n for n, _ in model.named_parameters()}
    for n in grads_a:
        assert torch.allclose(grads_a[n], grads_b[n], atol=1e-5, rtol=1e-4), n
    torch.manual_seed(6)
    assert not torch.allclose(model(x), a)  # other draws drop other samples


@pytest.mark.parametrize("name", ["transformer-relative", "class-attention", "convnext"])
def test_drop_path_on_kept_samples_under_bf16_autocast(name):
    # an accelerator's default precision: a bf16 branch added back onto the fp32 stream
    model = build(name, drop_path={"rate": 0.5, "schedule": "uniform"}).train()
    drops = [m for m in model.modules() if isinstance(m, DropPath)]
    x = torch.randn(8, 3, 32, 32)
    outs = []
    for on_kept in (True, False):
        for d in drops:
            d.per_sample = on_kept
        torch.manual_seed(5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
        logits.float().logsumexp(-1).sum().backward()
        outs.append(logits.float().detach())
    assert torch.isfinite(outs[0]).all()
    assert torch.allclose(outs[0], outs[1], atol=0.1, rtol=0.05)


def test_drop_path_schedule_linear_over_all_blocks():
    model = build("transformer-relative", drop_path={"rate": 0.3, "schedule": "linear"})
    n = sum(st["depth"] for st in BLOCK_SPECS["transformer-relative"]["stages"])
    blocks = [b for stage in model.stages for b in stage.blocks]
    assert len(blocks) == n
    rates = [b.drop_path.rate if isinstance(b.drop_path, DropPath) else 0.0 for b in blocks]
    assert rates[0] == 0.0
    assert rates[-1] == pytest.approx(0.3)
    assert rates == pytest.approx([0.3 * i / (n - 1) for i in range(n)])


@pytest.mark.parametrize("name", ["transformer-absolute", "transformer-relative-cls", "class-attention"])
def test_head_pool_cls_takes_the_class_token(name):
    model = build(name)
    model.eval()
    captured = {}
    model.stages[-1].register_forward_hook(lambda mod, inp, out: captured.update(out=out))
    with torch.no_grad():
        logits = model(torch.randn(BATCH, 3, 32, 32))
        x, cls = captured["out"]
        assert cls is not None and cls.shape == (BATCH, 1, x.shape[1])
        head = model.head
        expected = head.fc(head.norm(cls[:, 0]))
        assert torch.allclose(logits, expected, atol=1e-6)
        # the patch map does not reach the logits
        assert torch.allclose(head(torch.randn_like(x), cls), logits, atol=1e-6)
        # but the class token does
        assert not torch.allclose(head(x, torch.randn_like(cls)), logits)


def test_head_pool_avg_averages_the_map():
    model = build("convnext")
    model.eval()
    captured = {}
    model.stages[-1].register_forward_hook(lambda mod, inp, out: captured.update(out=out))
    with torch.no_grad():
        logits = model(torch.randn(BATCH, 3, 32, 32))
        x, cls = captured["out"]
        assert cls is None
        assert torch.allclose(logits, model.head.fc(model.head.norm(x.mean((2, 3)))), atol=1e-6)


def test_class_attention_updates_only_the_class_token():
    model = build("class-attention")
    model.eval()
    with torch.no_grad():
        feats = model.forward_intermediates(torch.randn(BATCH, 3, 32, 32), intermediates_only=True)
    # the class-attention stage leaves the patch map as it found it
    assert torch.equal(feats[-1], feats[-2])


def test_class_token_is_prepended_once():
    model = build("transformer-absolute")
    tokens = [n for n, p in model.named_parameters() if n.endswith("class_token.token")]
    assert tokens == ["stages.0.class_token.token"]
    model = build("class-attention")
    tokens = [n for n, p in model.named_parameters() if n.endswith("class_token.token")]
    assert tokens == ["stages.1.class_token.token"]


def test_class_token_stage_with_stride_2_is_rejected():
    s = spec(CONV_STEM, [{"block": "transformer", "depth": 1, "width": 32, "heads": 2, "class_token": True}],
             head={"pool": "cls"})
    assert s.stages[0].stride == 2
    with pytest.raises(SpecError) as err:
        lower(s)
    assert any(p.path == "stages[0].stride" for p in err.value.problems)


@pytest.mark.parametrize("kernel, stride, bias, channels_last, size", [
    (7, 1, True, False, 9), (7, 1, True, True, 4), (7, 2, False, False, 9), (7, 2, True, True, 8),
    (7, 1, True, False, 2), (7, 1, False, True, 3), (7, 2, True, False, 1),   # kernel cropped to the map's reach
    (3, 1, True, True, 1), (3, 2, False, False, 1), (3, 1, True, False, 2), (3, 1, False, True, 2),
    (3, 2, True, True, 3), (3, 1, True, False, 8)])
def test_depthwise_convolution_has_torchs_values_and_gradients(kernel, stride, bias, channels_last, size):
    # cropped kernels, the weight gradient as a grouped convolution, or torch's own (DepthwiseConv2d)
    # against nn.Conv2d
    from archspace.layers.modules import DepthwiseConv2d

    torch.manual_seed(0)
    ours = DepthwiseConv2d(6, 6, kernel, stride, kernel // 2, groups=6, bias=bias)
    _same_as_torchs_conv(ours, torch.nn.Conv2d(6, 6, kernel, stride, kernel // 2, groups=6, bias=bias),
                         torch.randn(3, 6, size, size), channels_last, atol=1e-6)


def _same_as_torchs_conv(ours, ref, x, channels_last, atol):
    """``ours`` (a conv class of layers.modules, in train mode) gives ``ref``'s values, in the
    input's memory format, and its input and parameter gradients."""
    ref.load_state_dict(ours.state_dict())
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), ref(xb)
    assert ya.shape == yb.shape
    assert ya.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert torch.allclose(ya, yb, atol=atol)
    weights = torch.randn_like(ya)
    (ya * weights).sum().backward()
    (yb * weights).sum().backward()
    assert torch.allclose(xa.grad, xb.grad, atol=1e-5)
    for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-4, rtol=1e-4), name


@pytest.mark.parametrize("kernel, stride, bias, channels_last, size", [
    (3, 1, True, False, 1), (3, 2, False, True, 1), (5, 1, True, False, 1),   # a 1×1 map: the centre tap
    (3, 1, False, False, 2), (3, 1, True, True, 2), (3, 2, True, False, 4), (3, 2, False, True, 3),
    (5, 1, True, False, 2), (7, 2, False, False, 3),                           # patches of the cropped kernel
    (3, 1, True, False, 3), (3, 2, True, True, 6)])                            # larger outputs: torch's own
def test_dense_convolution_on_small_maps_has_torchs_values_and_gradients(kernel, stride, bias, channels_last, size):
    from archspace.layers.modules import DenseConv2d

    torch.manual_seed(0)
    ours = DenseConv2d(5, 7, kernel, stride, kernel // 2, bias=bias)
    _same_as_torchs_conv(ours, torch.nn.Conv2d(5, 7, kernel, stride, kernel // 2, bias=bias),
                         torch.randn(3, 5, size, size), channels_last, atol=1e-5)


@pytest.mark.parametrize("stride, bias, channels_last, batch, size, fast", [
    (1, True, False, 3, 1, True), (2, False, True, 3, 1, True), (1, False, True, 4, 2, True),   # 1×1, 2×2 maps
    (2, True, True, 2, 4, True), (2, False, True, 2, 5, True),     # the stride as a slice (odd size too)
    (1, True, False, 2, 4, False),         # an NCHW map larger than 1×1: torch's own
    (1, True, True, 40, 4, False)])        # more than MAX_ROWS rows: torch's own
def test_pointwise_convolution_has_torchs_values_and_gradients(stride, bias, channels_last, batch, size, fast):
    from torch.utils.flop_counter import FlopCounterMode

    from archspace.layers.modules import PointwiseConv2d

    torch.manual_seed(0)
    ours = PointwiseConv2d(24, 16, 1, stride, bias=bias)
    x = torch.randn(batch, 24, size, size)
    with FlopCounterMode(display=False) as counter:
        ours(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    assert any("convolution" in str(op) for op in counter.get_flop_counts()["Global"]) != fast
    _same_as_torchs_conv(ours, torch.nn.Conv2d(24, 16, 1, stride, bias=bias), x, channels_last, atol=1e-5)


@pytest.mark.parametrize("shape, features, outputs, bias, needs", [
    ((64, 384), 384, 1536, True, "xw"), ((2, 197, 96), 96, 384, False, "xw"),   # tokens
    ((2, 5, 5, 48), 48, 12, True, "xw"),                                         # channels-last map
    ((8, 33), 33, 10, True, "w"),          # a first layer: no input gradient
    ((8, 33), 33, 10, True, "x"),          # frozen weights
    ((1, 3), 3, 1, False, "xw")])
def test_linear_has_torchs_values_and_gradients(shape, features, outputs, bias, needs, monkeypatch):
    # archspace's Linear trains on oneDNN on the cpu (forward and input gradient), is F.linear elsewhere
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from archspace.layers import modules
    from archspace.layers.modules import Linear

    monkeypatch.setattr(modules, "ONEDNN_MIN_MACS", 0)  # these small products too
    torch.manual_seed(0)
    ours, ref = Linear(features, outputs, bias=bias), torch.nn.Linear(features, outputs, bias=bias)
    ref.load_state_dict(ours.state_dict())
    for m in (ours, ref):
        m.weight.requires_grad_("w" in needs)
    x = torch.randn(*shape)
    xa, xb = x.clone().requires_grad_("x" in needs), x.clone().requires_grad_("x" in needs)
    with FlopCounterMode(display=False) as counter:
        ya = ours(xa)
    assert any("_linear_pointwise" in str(op) for op in counter.get_flop_counts()["Global"])  # oneDNN ran
    assert counter.get_total_flops() == 2 * x.numel() // features * features * outputs  # counted as addmm
    yb = ref(xb)
    assert ya.shape == yb.shape and torch.allclose(ya, yb, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(ya)
    ya.backward(grad)
    yb.backward(grad)
    for a, b in [(xa, xb), (ours.weight, ref.weight)] + ([(ours.bias, ref.bias)] if bias else []):
        assert (a.grad is None) == (b.grad is None)
        assert a.grad is None or torch.allclose(a.grad, b.grad, atol=1e-4, rtol=1e-5)
    # evaluation (eval mode, or no gradients), bf16 autocast: torch's own, bit for bit
    with torch.no_grad():
        assert torch.equal(ours(x), F.linear(x, ref.weight, ref.bias))
    with FlopCounterMode(display=False) as counter:  # an export: eval mode with gradients on
        assert torch.equal(ours.eval()(x), F.linear(x, ref.weight, ref.bias))
    assert not any("_linear_pointwise" in str(op) for op in counter.get_flop_counts()["Global"])
    ours.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ours(x.requires_grad_())
        assert out.dtype == torch.bfloat16 and torch.equal(out, ref(x))


def test_linear_runs_products_under_the_threshold_as_torch_does():
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from archspace.layers.modules import ONEDNN_MIN_MACS, Linear

    for rows, ran in ((ONEDNN_MIN_MACS // (64 * 64) - 1, False), (ONEDNN_MIN_MACS // (64 * 64), True)):
        layer = Linear(64, 64)
        x = torch.randn(rows, 64, requires_grad=True)
        with FlopCounterMode(display=False) as counter:
            y = layer(x)
        assert any("_linear_pointwise" in str(op) for op in counter.get_flop_counts()["Global"]) == ran
        if not ran:
            assert torch.equal(y, F.linear(x, layer.weight, layer.bias))


def test_the_linear_kernels_benchmark_runs():
    # benchmarks/linear_kernels.py prints the numbers docs/devices.md quotes; here it only has to run
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "linear_kernels.py"
    out = subprocess.run([sys.executable, str(script), "--repeat", "1", "--json"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads(out.stdout)["rows"]
    assert len(rows) == 9
    for row in rows:
        for part in ("forward", "input_grad", "weight_grad", "layer"):
            assert row[part]["torch_ms"] > 0 and row[part]["onednn_ms"] > 0, (row["what"], part)


def test_the_step_profile_benchmark_runs_and_accounts_for_the_whole_step():
    # benchmarks/step_profile.py prints where a step's time goes (docs/devices.md); here it has to
    # run, account for the profiled step and count fewer product FLOPs for archspace's DeiT-S than
    # for timm's: its last block computes the class token alone and drop path skips dropped rows
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "step_profile.py"
    out = subprocess.run([sys.executable, str(script), "--presets", "deit-s", "--sizes", "32", "--batch", "2",
                          "--rounds", "1", "--profiled", "1", "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["peaks_gflops_per_s"]["mkl"] > 0
    ours, theirs = report["rows"]
    assert (ours["model"], theirs["model"]) == ("archspace", "deit_small_patch16_224")
    for row in (ours, theirs):
        groups = row["groups_ms"]
        assert set(groups) == {"matmul", "attention", "convolution", "optimizer", "other aten", "autograd + python",
                               "between events"}
        assert groups["matmul"] > 0 and groups["optimizer"] > 0 and groups["convolution"] > 0
        assert min(groups.values()) >= 0
        # the kernels and autograd events account for the step: what no event covers is a minority
        assert groups["between events"] < 0.5 * row["profiled_step_ms"]
        assert row["step_ms"] > 0 and row["floor_ms"] > 0
        assert min(row["forward_ms"], row["backward_ms"], row["optimizer_ms"]) > 0
    assert 0 < ours["product_gflop"] < theirs["product_gflop"]


def test_in_place_relus_give_the_gradients_of_out_of_place_ones():
    # ResNet's ReLUs overwrite their input (a conv's, a norm's or the residual sum's own output)
    import copy

    import torch.nn.functional as F

    from archspace import load_spec

    torch.manual_seed(0)
    ours = compile_network(load_spec("resnet-50")).train()
    plain = copy.deepcopy(ours)
    relus = [m for m in plain.modules() if isinstance(m, torch.nn.ReLU) and m.inplace]
    assert len(relus) == 49
    for m in relus:
        m.inplace = False
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    for model in (ours, plain):
        F.cross_entropy(model(x), y).backward()
    for (name, a), b in zip(ours.named_parameters(), plain.parameters()):
        assert torch.equal(a.grad, b.grad), name


@pytest.mark.parametrize("name", ["deit-s", "deit-s-cls-at-11", "vit_c-1gf"])
def test_a_class_token_head_skips_the_last_blocks_other_tokens_with_the_same_logits_and_gradients(name):
    # while training, the last block computes the class tokens alone (the head reads nothing else)
    from archspace import load_spec

    model = compile_network(load_spec(name)).train()
    assert model.class_only
    x = torch.randn(4, 3, 32, 32)
    results = []
    for class_only in (True, False):
        model.class_only = class_only
        model.zero_grad()
        torch.manual_seed(5)  # the same drop path draws
        logits = model(x)
        logits.logsumexp(-1).sum().backward()
        results.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (a, grads_a), (b, grads_b) = results
    assert torch.allclose(a, b, atol=1e-5)
    for n in grads_a:
        assert torch.allclose(grads_a[n], grads_b[n], atol=1e-5, rtol=1e-4), n
    model.class_only = True
    with torch.no_grad():  # evaluation runs every token (the analytic cost's network)
        assert torch.allclose(model.eval()(x), model.forward_head(model.forward_features(x)), atol=1e-6)
    assert not compile_network(load_spec("coatnet-0")).class_only  # an average-pooling head reads the map


@pytest.mark.parametrize("heads", [4, 1])  # head size 8 (fewer than the keys) and 32 (more)
@pytest.mark.parametrize("kind", ["plain", "relative-bias", "relative-bias-class-token", "class-token-prefix",
                                  "class-attention"])
def test_explicit_attention_on_short_sequences_has_torchs_values_and_gradients(kind, heads, monkeypatch):
    # while training on the cpu, attention over at most EXPLICIT_KEYS keys runs as explicit
    # products: the values and gradients of torch's kernel. Self-attention over the whole
    # sequence runs as one autograd function (layers.modules._PackedAttention); class tokens
    # alone and class attention as composed products (layers.modules.attend), the 1/√d scaling
    # applied to the queries or to the logits, whichever is smaller.
    import copy

    from archspace.layers import modules

    torch.manual_seed(0)
    bias = modules.RelativePositionBias(heads, (3, 3)) if kind.startswith("relative-bias") else modules.NoBias()
    if kind == "class-attention":
        layer = modules.ClassAttention(32, heads, True)
        run = lambda m, x: m(x, 1)  # noqa: E731
    else:
        layer = modules.Attention(32, 32, heads, True, bias)
        if kind == "class-token-prefix":
            run = lambda m, x: m.forward_prefix(x, (3, 3), 1)  # noqa: E731
        else:
            run = lambda m, x: m(x, (3, 3), x.shape[1] - 9)  # noqa: E731
    tokens = 9 if kind in ("plain", "relative-bias") else 10
    packed = kind in ("plain", "relative-bias", "relative-bias-class-token")
    x = torch.randn(5, tokens, 32)
    sdpa, calls = torch.nn.functional.scaled_dot_product_attention, []
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    outputs = {}
    for keys in (modules.EXPLICIT_KEYS, 0):  # 0: torch's kernel for every length
        monkeypatch.setattr(modules, "EXPLICIT_KEYS", keys)
        m = copy.deepcopy(layer).train()
        xi = x.clone().requires_grad_()
        y = run(m, xi)
        assert len(calls) == (keys == 0)  # the explicit path ran, then torch's kernel
        assert ("_PackedAttentionBackward" in _autograd_nodes(y)) == (packed and keys > 0)
        calls.clear()
        (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
        outputs[keys] = (y, xi.grad, {n: p.grad for n, p in m.named_parameters()})
    (ya, ga, pa), (yb, gb, pb) = outputs.values()
    assert torch.allclose(ya, yb, atol=1e-6) and torch.allclose(ga, gb, atol=1e-6)
    assert pa.keys() == pb.keys() and all(torch.allclose(pa[n], pb[n], atol=1e-5) for n in pa)


def _autograd_nodes(t: torch.Tensor) -> set[str]:
    seen, todo, names = set(), [t.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        todo.extend(f for f, _ in node.next_functions)
    return names


@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize("tokens", [9, 10])  # 10: a class token first (the bias's prefix row and column)
def test_talking_heads_attention_is_the_papers_formula_in_values_and_gradients(relative, tokens):
    # CaiT's talking heads: W_w · softmax(W_l · (q kᵀ/√d + bias)), then times v, each W a linear
    # map across the heads. While training on the cpu archspace runs it as one autograd function
    # with a hand-written backward (layers.modules._PackedAttention); elsewhere as composed products.
    import copy

    from archspace.layers import modules

    torch.manual_seed(0)
    prefix = tokens - 9
    bias = modules.RelativePositionBias(4, (3, 3)) if relative else modules.NoBias()
    layer = modules.TalkingHeadsAttention(32, 32, 4, True, bias).train()
    with torch.no_grad():  # mixings far from the identity, and a bias far from zero
        for p in (*layer.mix_logits.parameters(), *layer.mix_weights.parameters(), *bias.parameters()):
            p.normal_()
    ref = copy.deepcopy(layer)
    x = torch.randn(5, tokens, 32)

    def reference(m, x):
        b, n, _ = x.shape
        q, k, v = m.qkv(x).reshape(b, n, 3, 4, 8).permute(2, 0, 3, 1, 4)
        logits = (q @ k.transpose(-2, -1)) / 8 ** 0.5
        if relative:
            logits = logits + m.bias((3, 3), prefix)
        mix = lambda lin, t: lin(t.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # noqa: E731
        weights = mix(m.mix_weights, mix(m.mix_logits, logits).softmax(-1))
        return m.proj((weights @ v).transpose(1, 2).reshape(b, n, 32))

    outputs = []
    for m, f in ((layer, lambda m, x: m(x, (3, 3), prefix)), (ref, reference)):
        xi = x.clone().requires_grad_()
        y = f(m, xi)
        (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
        outputs.append((y, xi.grad, {n: p.grad for n, p in m.named_parameters()}))
    (ya, ga, pa), (yb, gb, pb) = outputs
    assert "_PackedAttentionBackward" in _autograd_nodes(ya)
    assert torch.allclose(ya, yb, atol=1e-5) and torch.allclose(ga, gb, atol=1e-5)
    assert pa.keys() == pb.keys() and len(pa) == 8 + relative
    for n in pa:
        assert torch.allclose(pa[n], pb[n], atol=1e-5, rtol=1e-4), (n, (pa[n] - pb[n]).abs().max())
    with torch.no_grad():  # evaluation: the composed products, the same values
        y_eval = layer.eval()(x, (3, 3), prefix)
        assert torch.allclose(y_eval, reference(ref, x), atol=1e-5)
    assert "_PackedAttentionBackward" not in _autograd_nodes(layer(x.requires_grad_(), (3, 3), prefix))
