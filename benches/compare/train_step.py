"""PyTorch side of the training-step comparison (`cargo bench --bench train_step` is the Rust
side): times one training step of NASNet-A with the CIFAR stem in PyTorch eager on the CPU.

The network is rebuilt op for op from this repository's definition (core/src/config.rs
`NetworkConfig::nasnet_a_cifar`, core/src/space.rs `Genotype::nasnet_a`, model/src/model.rs,
cell.rs, layers.rs): 3x3 SAME stem with 3 F filters and BN, N normal cells per stage, reduction
cells before stages 2 and 3 (filter scaling 2, `skip_reduction_layer_input` false), TF SAME
padding including the asymmetric stride-2 case, stride-2 average pools that exclude padding
(PoolingRule::Tf), factorized reductions, the auxiliary head after the last cell of stage 2
(loss weight 0.4), ScheduledDropPath on every non-identity branch (per-sample masks, keep
`1 - progress * (cell_num + 1) / total_cells * (1 - 0.6)`), and the last ReLU, average pool,
dropout (0 in the preset), linear. Module names equal the Rust state-dict keys, so the parameter
count (and the key set) can be checked against the Rust network (`nasnet export --format
safetensors` rejects any missing, extra or misshapen key).

The step mirrors search/src/train/trainer.rs `Trainer::step` with `TrainConfig::default()`: batch-norm in
training mode (momentum 0.1), cross-entropy plus 0.4 x the auxiliary loss, backward, global
gradient-norm clipping to 5, weight decay 5e-4 on conv/linear weights, SGD with Nesterov momentum
0.9 (lr 0.025; the cosine schedule is left out: it changes a scalar, not the work).

  python benches/compare/train_step.py --cells 2 --filters 16 --image-size 32 --classes 10 \
      --batch 32 --steps 20 --threads 2

Prints {"params": ..., "ms_per_step": ..., "images_per_s": ...} (median over --steps timed
steps, after 3 warm-up steps).
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# NASNet-A (tensorflow/models research/slim/nets/nasnet/nasnet_utils.py), as core/src/space.rs:
# blocks (input_left, op_left, input_right, op_right) and the states concatenated at the end.
NORMAL = ([(0, "sep5", 1, "sep3"), (1, "sep5", 1, "sep3"), (0, "avg3", 1, "id"),
           (1, "avg3", 1, "avg3"), (0, "sep3", 0, "id")], [1, 2, 3, 4, 5, 6])
REDUCTION = ([(0, "sep5", 1, "sep7"), (0, "max3", 1, "sep7"), (0, "avg3", 1, "sep5"),
              (3, "id", 2, "avg3"), (2, "sep3", 0, "max3")], [3, 4, 5, 6])


def same_pad(n, k, stride, dilation=1):
    """TF SAME padding of one dimension: (before, after), the odd pixel after."""
    out = -(-n // stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - n, 0)
    return total // 2, total - total // 2


class Conv(nn.Conv2d):
    """Bias-free convolution with TF SAME (or VALID) padding, computed per input size."""

    def __init__(self, cin, cout, k, stride=1, dilation=1, groups=1, same=True):
        super().__init__(cin, cout, k, stride, 0, dilation, groups, bias=False)
        self.same = same

    def forward(self, x):
        if not self.same:
            return super().forward(x)
        (kh, kw), s, d = self.kernel_size, self.stride[0], self.dilation[0]
        t, b = same_pad(x.shape[2], kh, s, d)
        l, r = same_pad(x.shape[3], kw, s, d)
        if (t, l) != (b, r):
            x, t, l = F.pad(x, (l, r, t, b)), 0, 0
        return F.conv2d(x, self.weight, None, s, (t, l), d, self.groups)


def pool(x, kind, k, stride):
    """SAME max pool, or SAME average pool whose divisor excludes the padding."""
    t, b = same_pad(x.shape[2], k, stride)
    l, r = same_pad(x.shape[3], k, stride)
    if (t, l) == (b, r):
        if kind == "max":
            return F.max_pool2d(x, k, stride, (t, l))
        return F.avg_pool2d(x, k, stride, (t, l), count_include_pad=False)
    if kind == "max":
        return F.max_pool2d(F.pad(x, (l, r, t, b), value=float("-inf")), k, stride)
    ones = torch.ones_like(x[:1, :1])
    return (F.avg_pool2d(F.pad(x, (l, r, t, b)), k, stride)
            / F.avg_pool2d(F.pad(ones, (l, r, t, b)), k, stride))


class ConvBn(nn.Module):
    """Optional ReLU, convolution, batch norm (keys conv, bn)."""

    def __init__(self, relu, conv, eps):
        super().__init__()
        self.relu, self.conv, self.bn = relu, conv, nn.BatchNorm2d(conv.out_channels, eps)

    def forward(self, x):
        return self.bn(self.conv(F.relu(x) if self.relu else x))


class Holder(nn.Module):
    """A module whose only child is `conv` (keys path_1.conv.weight)."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv


def add_factorized(m, cin, cout, eps):
    m.path_1 = Holder(Conv(cin, cout // 2, 1, 2, same=False))
    m.path_2 = Holder(Conv(cin, cout // 2, 1, 2, same=False))
    m.final_path_bn = nn.BatchNorm2d(2 * (cout // 2), eps)


def factorized(m, x):
    """Two stride-2 1x1 convs, the second on the input shifted by one pixel; concat; BN."""
    p1 = m.path_1.conv(x)
    p2 = m.path_2.conv(F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1)))
    return m.final_path_bn(torch.cat([p1, p2], 1))


class FactorizedReduction(nn.Module):
    def __init__(self, cin, cout, eps):
        super().__init__()
        add_factorized(self, cin, cout, eps)

    def forward(self, x):
        return factorized(self, x)


class SepConv(nn.Module):
    def __init__(self, cin, cout, k, stride):
        super().__init__()
        self.depthwise_conv2d = Conv(cin, cin, k, stride, groups=cin)
        self.pointwise_conv2d = Conv(cin, cout, 1)

    def forward(self, x):
        return self.pointwise_conv2d(self.depthwise_conv2d(x))


class BranchSeparables(nn.Module):
    """[ReLU, separable conv, BN] twice; the stride and the width change on the first."""

    def __init__(self, cin, cout, k, stride, eps):
        super().__init__()
        self.separable_1, self.bn_sep_1 = SepConv(cin, cout, k, stride), nn.BatchNorm2d(cout, eps)
        self.separable_2, self.bn_sep_2 = SepConv(cout, cout, k, 1), nn.BatchNorm2d(cout, eps)

    def forward(self, x):
        x = self.bn_sep_1(self.separable_1(F.relu(x)))
        return self.bn_sep_2(self.separable_2(F.relu(x)))


class PoolBranch(nn.Module):
    """SAME pooling, then 1x1 conv + BN when the width changes (keys conv, bn)."""

    def __init__(self, kind, cin, cout, stride, eps):
        super().__init__()
        self.kind, self.stride = kind, stride
        if cin != cout:
            self.conv, self.bn = Conv(cin, cout, 1, same=False), nn.BatchNorm2d(cout, eps)

    def forward(self, x):
        y = pool(x, self.kind, 3, self.stride)
        return self.bn(self.conv(y)) if hasattr(self, "conv") else y


def branch(op, cin, cout, stride, eps):
    """search/src/layers.rs Branch::new; returns (module, whether drop-path applies)."""
    if op == "id":
        if stride == 1 and cin == cout:
            return nn.Identity(), False
        return ConvBn(True, Conv(cin, cout, 1, stride, same=False), eps), False
    if op in ("avg3", "max3"):
        return PoolBranch(op[:3], cin, cout, stride, eps), True
    return BranchSeparables(cin, cout, int(op[3]), stride, eps), True


class Cell(nn.Module):
    def __init__(self, genotype, reduction, f, inp, prev, eps, keep):
        super().__init__()
        blocks, outputs = genotype
        c, h, w = inp
        self.keep = keep  # final keep probability at this depth
        self.conv_1x1 = ConvBn(True, Conv(c, f, 1, same=False), eps)
        self.prev_mode, prev_shape = "raw", inp if prev is None else prev
        if prev is not None and prev[1:] != (h, w):
            self.prev_mode, prev_shape = "reduce", (f, h, w)
            add_factorized(self, prev[0], f, eps)
        elif prev is not None and prev[0] != f:
            self.prev_mode, prev_shape = "project", (f, h, w)
            self.conv_prev_1x1 = ConvBn(True, Conv(prev[0], f, 1, same=False), eps)
        stride = 2 if reduction else 1
        states = [(f, h, w), prev_shape]
        self.blocks, self.drops = [], []
        for b, (ia, oa, ib, ob) in enumerate(blocks):
            for label, idx, op in (("left", ia, oa), ("right", ib, ob)):
                s = stride if idx < 2 else 1
                mod, drops = branch(op, states[idx][0], f, s, eps)
                self.add_module(f"comb_iter_{b}_{label}", mod)
                self.drops.append(drops)
                shape = (f, -(-states[idx][1] // s), -(-states[idx][2] // s))
            self.blocks.append((ia, ib))
            states.append(shape)
        final = states[-1]
        self.outputs, out_c = outputs, 0
        for idx in outputs:
            sc, sh, sw = states[idx]
            if (sh, sw) != final[1:]:
                self.add_module(f"reduction_{idx}", FactorizedReduction(sc, final[0], eps))
            elif sc != final[0]:
                self.add_module(f"reduction_{idx}", ConvBn(False, Conv(sc, final[0], 1, same=False), eps))
            out_c += final[0] if hasattr(self, f"reduction_{idx}") else sc
        self.out_shape = (out_c, final[1], final[2])

    def drop_path(self, x, keep):
        if not self.training or keep >= 1.0:
            return x
        mask = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < keep
        return x * (mask.to(x.dtype) / keep)

    def forward(self, x, prev, progress):
        keep = 1.0 - progress * (1.0 - self.keep)
        prev = x if prev is None else prev
        if self.prev_mode == "reduce":
            prev = factorized(self, F.relu(prev))
        elif self.prev_mode == "project":
            prev = self.conv_prev_1x1(prev)
        states = [self.conv_1x1(x), prev]
        for b, (ia, ib) in enumerate(self.blocks):
            out = []
            for side, (label, idx) in enumerate((("left", ia), ("right", ib))):
                y = getattr(self, f"comb_iter_{b}_{label}")(states[idx])
                out.append(self.drop_path(y, keep) if self.drops[2 * b + side] else y)
            states.append(out[0] + out[1])
        parts = []
        for idx in self.outputs:
            fix = getattr(self, f"reduction_{idx}", None)
            parts.append(states[idx] if fix is None else fix(states[idx]))
        return torch.cat(parts, 1)


class AuxHead(nn.Module):
    def __init__(self, inp, classes, eps):
        super().__init__()
        c, h, w = inp
        ph, pw = (h - 5) // 3 + 1, (w - 5) // 3 + 1
        self.conv_1 = ConvBn(False, Conv(c, 128, 1, same=False), eps)
        self.conv_2 = ConvBn(True, Conv(128, 768, (ph, pw), same=False), eps)
        self.last_linear = nn.Linear(768, classes)

    def forward(self, x):
        x = self.conv_2(self.conv_1(F.avg_pool2d(F.relu(x), 5, 3)))
        return self.last_linear(F.relu(x).mean((2, 3)))


class NasNetCifar(nn.Module):
    """search/src/model.rs NasNet::new for Stem::Cifar."""

    def __init__(self, cells, filters, image_size, classes, stem_multiplier=3.0, rate=2.0,
                 dropout=0.0, drop_path_keep_prob=0.6, aux_head=True, eps=1e-5):
        super().__init__()
        stem_c = int(filters * stem_multiplier)
        self.conv0 = ConvBn(False, Conv(3, stem_c, 3), eps)
        self.dropout, self.progress = dropout, 1.0
        shapes, history, self.nodes = [(stem_c, image_size, image_size)], [None, 0], []
        total, n = 3 * cells + 2, cells

        def push(name, reduction, scaling, prev):
            inp = history[-1]
            keep = 1.0 - (len(self.nodes) + 1) / total * (1.0 - drop_path_keep_prob)
            cell = Cell(REDUCTION if reduction else NORMAL, reduction, int(filters * scaling),
                        shapes[inp], None if prev is None else shapes[prev], eps, keep)
            self.add_module(name, cell)
            shapes.append(cell.out_shape)
            self.nodes.append((name, inp, prev))
            history.append(len(shapes) - 1)

        scaling, self.aux_after = 1.0, None
        for i in range(3 * n):
            prev = history[-2]
            if i in (n, 2 * n):
                scaling *= rate
                push(f"reduction_cell_{i // n - 1}", True, scaling, history[-2])
                prev = history[-2]  # skip_reduction_layer_input = false
            push(f"cell_{i}", False, scaling, prev)
            if i + 1 == 2 * n:
                self.aux_after = history[-1]
        if aux_head:
            self.aux_head = AuxHead(shapes[self.aux_after], classes, eps)
        self.last_linear = nn.Linear(shapes[-1][0], classes)

    def forward(self, x):
        states, aux = [self.conv0(x)], None
        for name, inp, prev in self.nodes:
            prev = None if prev is None else states[prev]
            states.append(getattr(self, name)(states[inp], prev, self.progress))
            if len(states) - 1 == self.aux_after and hasattr(self, "aux_head"):
                aux = self.aux_head(states[-1])
        x = F.relu(states[-1]).mean((2, 3))
        return self.last_linear(F.dropout(x, self.dropout, self.training)), aux


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", type=int, default=2)
    p.add_argument("--filters", type=int, default=16)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--progress", type=float, default=0.5,
                   help="training progress for the drop-path schedule (0 turns it off)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    net = NasNetCifar(a.cells, a.filters, a.image_size, a.classes).train().to(dev)
    net.progress = a.progress
    params = sum(t.numel() for t in net.parameters())
    decay = [t for t in net.parameters() if t.dim() > 1]
    no_decay = [t for t in net.parameters() if t.dim() <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=0.025, momentum=0.9, nesterov=True)
    x = torch.randn(a.batch, 3, a.image_size, a.image_size, device=dev)
    y = torch.randint(0, a.classes, (a.batch,), device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step():
        logits, aux = net(x)
        loss = F.cross_entropy(logits, y)
        if aux is not None:
            loss = loss + 0.4 * F.cross_entropy(aux, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        sync()

    for _ in range(3):
        step()
    times = []
    for _ in range(a.steps):
        t = time.perf_counter()
        step()
        times.append((time.perf_counter() - t) * 1e3)
    ms = statistics.median(times)
    print(json.dumps({"params": params, "ms_per_step": round(ms, 3),
                      "images_per_s": round(a.batch * 1e3 / ms, 2)}))


if __name__ == "__main__":
    main()
