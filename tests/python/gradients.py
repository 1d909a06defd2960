"""Reference gradients from PyTorch for the layers and losses facesim trains with.

Inputs are made from sines and cosines so that Rust can build the very same tensors without
sharing a random generator. Each gradient is printed as two checksums: sum(g * c) with
c[i] = sin(0.11 i + 0.3) over the flattened gradient, and sum(|g|). The values are pasted into
`server/src/training/tests.rs`; run with `python tests/python/gradients.py` (needs torch).
"""
import math

import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)


def make(shape, a, b, scale=1.0):
    n = math.prod(shape)
    return torch.tensor([scale * math.sin(a * i + b) for i in range(n)]).reshape(shape).requires_grad_(True)


def check(name, g):
    flat = g.detach().flatten()
    c = torch.tensor([math.sin(0.11 * i + 0.3) for i in range(flat.numel())])
    print(f"{name}: weighted {float((flat * c).sum())!r} abs {float(flat.abs().sum())!r}")


def same_pad(x, k, s):
    size = x.shape[-1]
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    lo, hi = total // 2, total - total // 2
    return F.pad(x, (lo, hi, lo, hi))


# Conv 'same' (9x9, stride 2) + ReLU + 2x2 max-pool, then conv 5x5 stride 1 + ReLU + pool.
x = make((2, 3, 16, 16), 0.37, 0.1)
w1 = make((4, 3, 9, 9), 0.23, 0.5, 0.05)
b1 = make((4,), 0.9, 0.2, 0.1)
w2 = make((5, 4, 5, 5), 0.19, 0.7, 0.08)
b2 = make((5,), 1.3, 0.4, 0.1)
h = F.max_pool2d(F.relu(F.conv2d(same_pad(x, 9, 2), w1, b1, stride=2)), 2)
h = F.max_pool2d(F.relu(F.conv2d(same_pad(h, 5, 1), w2, b2)), 2)
out_c = torch.tensor([math.cos(0.7 * i) for i in range(h.numel())]).reshape(h.shape)
(h * out_c).sum().backward()
check("conv x", x.grad)
check("conv w1", w1.grad)
check("conv b1", b1.grad)
check("conv w2", w2.grad)
check("conv b2", b2.grad)

# Two tanh FC layers.
x = make((4, 6), 0.41, 0.3)
w1 = make((5, 6), 0.29, 0.1, 0.4)
b1 = make((5,), 0.8, 0.6, 0.1)
w2 = make((3, 5), 0.31, 0.9, 0.4)
b2 = make((3,), 0.5, 0.2, 0.1)
y = torch.tanh(torch.tanh(x @ w1.T + b1) @ w2.T + b2)
(y * torch.tensor([math.cos(0.7 * i) for i in range(12)]).reshape(4, 3)).sum().backward()
check("fc x", x.grad)
check("fc w1", w1.grad)
check("fc b2", b2.grad)

# Losses on a batch of 6 pairs of 5-d features; targets 1, 0, 1, 0, 0, 1.
target = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])


def features():
    return make((6, 5), 0.53, 0.2, 0.6), make((6, 5), 0.47, 1.1, 0.6)


fa, fb = features()
d = ((fa - fb) ** 2).sum(1).sqrt()
loss = (target * d**2 + (1 - target) * F.relu(2.0 - d) ** 2).sum() / (2 * 6)
loss.backward()
print(f"contrastive loss {float(loss.detach())!r}")
check("contrastive fa", fa.grad)

fa, fb = features()
n = lambda v: v / v.norm(dim=1, keepdim=True)
d0 = (n(fa.detach() * 1.7 + 0.1) - n(fb.detach() * 1.7 - 0.1)).norm(dim=1)
d = (n(fa) - n(fb)).norm(dim=1)
loss = 0.5 * (target * (d - d0) ** 2).sum() + 0.5 * ((1 - target) * F.relu(0.55 - d)).sum()
loss.backward()
print(f"geometry loss {float(loss.detach())!r}")
check("geometry fa", fa.grad)

logits = make((6,), 0.9, 0.3, 2.0)
loss = F.binary_cross_entropy_with_logits(logits, target)
loss.backward()
print(f"bce loss {float(loss.detach())!r}")
check("bce logits", logits.grad)

logits = make((6,), 0.9, 0.3, 2.0)
p = torch.sigmoid(logits)
ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
p_t = target * p + (1 - target) * (1 - p)
loss = ((1 - p_t) ** 2 * ce).mean()
loss.backward()
print(f"focal loss {float(loss.detach())!r}")
check("focal logits", logits.grad)

# Mining loss on cosine similarities; with epsilon -0.08 some pairs are left out. Both terms are
# scaled by 1/N (N = 6 pairs), as the kinship paper writes it.
fa, fb = features()
s = F.cosine_similarity(fa, fb, dim=1)
alpha, beta, lam, eps = 0.2, 3.1, 1.5, -0.08
pos, neg = target > 0.5, target < 0.5
sv = s.detach()
keep_p = pos & (sv < sv[neg].max() + eps)
keep_n = neg & (sv > sv[pos].min() - eps)
loss = (1 / (6 * alpha)) * torch.log(1 + torch.exp(-alpha * (s[keep_p] - lam)).sum()) + (1 / (6 * beta)) * torch.log(
    1 + torch.exp(beta * (s[keep_n] - lam)).sum()
)
loss.backward()
print(f"mining loss {float(loss.detach())!r} kept {int(keep_p.sum())} + {int(keep_n.sum())}")
check("mining fa", fa.grad)

# The in-batch variant, written pair by pair: the 3 similar pairs are the positives; the 3
# labelled dissimilar pairs and the 6 cross pairs (a_i, b_j), i != j, of the similar pairs are
# the negatives; N = 3. epsilon 0.3 leaves some out.
fa, fb = features()
similar = [i for i in range(6) if target[i] > 0.5]
cos = lambda u, v: (u * v).sum() / (u.norm() * v.norm())
positives = [cos(fa[i], fb[i]) for i in similar]
negatives = [cos(fa[i], fb[i]) for i in range(6) if target[i] < 0.5]
negatives += [cos(fa[i], fb[j]) for i in similar for j in similar if i != j]
alpha, beta, lam, eps = 0.7, 2.3, 0.2, 0.3
hardest_negative = max(float(v.detach()) for v in negatives)
easiest_positive = min(float(v.detach()) for v in positives)
kept_p = [v for v in positives if float(v.detach()) < hardest_negative + eps]
kept_n = [v for v in negatives if float(v.detach()) > easiest_positive - eps]
n = len(similar)
loss = (1 / (n * alpha)) * torch.log(1 + sum(torch.exp(-alpha * (v - lam)) for v in kept_p)) + (
    1 / (n * beta)
) * torch.log(1 + sum(torch.exp(beta * (v - lam)) for v in kept_n))
loss.backward()
print(f"in-batch mining loss {float(loss.detach())!r} kept {len(kept_p)} + {len(kept_n)} of {len(negatives)}")
check("in-batch mining fa", fa.grad)
check("in-batch mining fb", fb.grad)
