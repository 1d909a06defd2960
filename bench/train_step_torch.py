"""One training step of the same Siamese networks in PyTorch (CPU), the peer of
`server/examples/bench_train_step.rs`: same layers ('same' padding, 2x2 max-pool, FC-400 for the
CNN; 2000-1000-600-400 tanh for GAML), same losses, optimisers, batch and thread count.

Usage: python bench/train_step_torch.py <cnn|gaml> <batch> <steps> <threads> [gaml input dim]
"""
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

model, batch, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
dim = int(sys.argv[5]) if len(sys.argv) > 5 else 128
torch.set_num_threads(threads)
torch.manual_seed(1)


class Cnn(nn.Module):
    layers = [(32, 9, 2), (64, 7, 1), (128, 5, 1), (256, 3, 1), (512, 1, 1), (1024, 1, 1)]

    def __init__(self):
        super().__init__()
        convs, c = [], 3
        for maps, k, s in self.layers:
            conv = nn.Conv2d(c, maps, k, stride=s)
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
            convs.append(conv)
            c = maps
        self.convs = nn.ModuleList(convs)
        self.fc = nn.Linear(1024, 400)

    def forward(self, x):
        for conv, (_, k, s) in zip(self.convs, self.layers):
            size = x.shape[-1]
            total = max((-(-size // s) - 1) * s + k - size, 0)
            x = F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))
            x = F.max_pool2d(F.relu(conv(x)), 2)
        return self.fc(x.flatten(1))


class Gaml(nn.Module):
    def __init__(self, d):
        super().__init__()
        widths, layers = [d, 2000, 1000, 600, 400], []
        for i, o in zip(widths, widths[1:]):
            layer = nn.Linear(i, o)
            nn.init.uniform_(layer.weight, -1 / math.sqrt(i), 1 / math.sqrt(i))
            nn.init.zeros_(layer.bias)
            layers.append(layer)
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return x


def inputs(shape, phase):
    n = math.prod(shape)
    return (torch.sin(torch.arange(n, dtype=torch.float64) * 0.0013 + phase) * 0.5).float().reshape(shape)


y = (torch.arange(batch) % 2).float()
if model == "cnn":
    net, shape = Cnn(), (batch, 3, 128, 128)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def loss_fn(a, b):
        both = net(torch.cat([a, b]))
        d = ((both[:batch] - both[batch:]) ** 2).sum(1).add(1e-12).sqrt()
        return (y * d**2 + (1 - y) * F.relu(2.0 - d) ** 2).sum() / (2 * batch)
else:
    net, shape = Gaml(dim), (batch, dim)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)

    def loss_fn(a, b):
        both = net(torch.cat([a, b]))
        d0 = (F.normalize(a) - F.normalize(b)).norm(dim=1)
        d = (F.normalize(both[:batch]) - F.normalize(both[batch:])).norm(dim=1)
        return 0.5 * (y * (d - d0) ** 2).sum() + 0.5 * ((1 - y) * F.relu(0.55 - d)).sum()


a, b = inputs(shape, 0.0), inputs(shape, 1.0)


def step():
    opt.zero_grad()
    loss_fn(a, b).backward()
    opt.step()


step()
started = time.perf_counter()
for _ in range(steps):
    step()
elapsed = (time.perf_counter() - started) / steps
label = f"gaml d={dim}" if model == "gaml" else "cnn"
print(json.dumps({"impl": f"PyTorch {torch.__version__} CPU", "model": label, "batch": batch, "threads": threads,
                  "step_ms": round(elapsed * 1000, 2), "pairs_per_s": round(batch / elapsed, 1)}))
