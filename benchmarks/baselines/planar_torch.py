"""The seed algorithm in PyTorch: the baseline tfnf is measured against.

Fixed N(0, I) base, K planar layers with u, w, b ~ U(0, 1) and the paper's
u_hat reparameterisation, Adam lr 1e-2, reverse KL on a batch of samples.
torch (CPU build) is an optional benchmark dependency: `pip install torch==2.13.0`.

References:
    Rezende & Mohamed (2015), eq. 10-12 and Table 1.
"""

import math

import torch

LOG_2PI = math.log(2 * math.pi)


def u1(z: torch.Tensor) -> torch.Tensor:
    """log p~(z) = -U1(z), z: [N, 2] -> [N]."""
    z1 = z[:, 0]
    ring = -0.5 * ((z.norm(dim=1) - 2) / 0.4) ** 2
    modes = torch.stack([-0.5 * ((z1 - 2) / 0.6) ** 2, -0.5 * ((z1 + 2) / 0.6) ** 2])
    return ring + torch.logsumexp(modes, dim=0)


def u2(z):
    w1 = torch.sin(2 * math.pi * z[:, 0] / 4)
    return -0.5 * ((z[:, 1] - w1) / 0.4) ** 2


def u3(z):
    w1 = torch.sin(2 * math.pi * z[:, 0] / 4)
    w2 = 3 * torch.exp(-0.5 * ((z[:, 0] - 1) / 0.6) ** 2)
    d = z[:, 1] - w1
    return torch.logsumexp(
        torch.stack([-0.5 * (d / 0.35) ** 2, -0.5 * ((d + w2) / 0.35) ** 2]), dim=0
    )


def u4(z):
    w1 = torch.sin(2 * math.pi * z[:, 0] / 4)
    w3 = 3 * torch.sigmoid((z[:, 0] - 1) / 0.3)
    d = z[:, 1] - w1
    return torch.logsumexp(
        torch.stack([-0.5 * (d / 0.4) ** 2, -0.5 * ((d + w3) / 0.35) ** 2]), dim=0
    )


def _mixture(num_modes: int, radius: float, start: float, weights, scale: float):
    """ln sum_i w_i N(z; m_i, scale^2 I), modes evenly on a circle from angle `start`."""
    angles = start + 2 * math.pi * torch.arange(num_modes, dtype=torch.float32) / num_modes
    locs = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)  # [M, 2]
    log_w = torch.log(torch.tensor(weights, dtype=torch.float32) / sum(weights))

    def log_prob(z):
        squared = ((z[:, None, :] - locs[None]) ** 2).sum(-1) / scale**2  # [N, M]
        return torch.logsumexp(log_w - 0.5 * squared - math.log(2 * math.pi * scale**2), dim=1)

    return log_prob


TARGETS = {
    "U1": u1,
    "U2": u2,
    "U3": u3,
    "U4": u4,
    "hexagon": _mixture(6, 3.0, 0.0, [0.30, 0.22, 0.18, 0.15, 0.10, 0.05], 0.4),
    "triangle": _mixture(3, 2.5, math.pi / 2, [10.0, 10.0, 1.0], 0.5),
}


class PlanarFlow(torch.nn.Module):
    """K planar layers on a fixed standard normal base."""

    def __init__(self, num_layers: int, dim: int = 2):
        super().__init__()
        self.u = torch.nn.Parameter(torch.rand(num_layers, dim))
        self.w = torch.nn.Parameter(torch.rand(num_layers, dim))
        self.b = torch.nn.Parameter(torch.rand(num_layers))
        self.dim = dim

    def sample_and_log_prob(self, n: int):
        z = torch.randn(n, self.dim)
        log_q = -0.5 * (z**2).sum(1) - 0.5 * self.dim * LOG_2PI
        for u, w, b in zip(self.u, self.w, self.b, strict=True):
            wu = w @ u
            u_hat = u + (torch.nn.functional.softplus(wu) - 1 - wu) * w / (w @ w)
            t = torch.tanh(z @ w + b)
            log_q = log_q - torch.log(torch.abs(1 + (1 - t**2) * (w @ u_hat)))
            z = z + u_hat * t[:, None]
        return z, log_q


def train(num_layers: int, target: str, steps: int, batch_size: int = 4096, seed: int = 0):
    """The seed loop; returns the model and its optimiser (for stepping further)."""
    torch.manual_seed(seed)
    model = PlanarFlow(num_layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    log_p = TARGETS[target]
    for _ in range(steps):
        step(model, optimizer, log_p, batch_size)
    return model, optimizer


def step(model, optimizer, log_p, batch_size: int) -> float:
    z, log_q = model.sample_and_log_prob(batch_size)
    loss = (log_q - log_p(z)).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


@torch.no_grad()
def bound(model, target: str, num_samples: int = 100_000) -> tuple:
    """E_q[log q - log p~] and its standard error."""
    z, log_q = model.sample_and_log_prob(num_samples)
    gap = log_q - TARGETS[target](z)
    return float(gap.mean()), float(gap.std() / math.sqrt(num_samples))
