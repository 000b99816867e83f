"""The paper's DLGM in PyTorch: the model `tfnf vae` trains, written as a PyTorch user would.

The same network as `tfnf.models.FlowVAE` at its defaults: a maxout encoder
(784 -> 400 units of 4 pieces), linear heads to the base N(loc, softplus(raw)^2)
and to the K planar maps' per-image u, w, b (u as an offset from the u that makes
the map the identity, its head starting at zero), the maps with the paper's u_hat
reparameterisation, a maxout decoder (40 -> 400) and Bernoulli logits (784). One
sample of q per image, the negative ELBO, Adamax. It is measured for speed
(benchmarks/dlgm_throughput.py), not for its -ln p(x): it has no validation, no
warm-up, no guard against non-finite steps.

torch (CPU build) is an optional benchmark dependency: `pip install torch==2.13.0`.

References:
    Rezende & Mohamed (2015), sections 4.2 and 6.2.
"""

import math

import torch
from torch import nn
from torch.nn import functional

LOG_2PI = math.log(2 * math.pi)
SOFTPLUS_INVERSE_OF_1 = math.log(math.e - 1)


class Maxout(nn.Module):
    def __init__(self, inputs: int, units: int, pieces: int = 4):
        super().__init__()
        self.units, self.pieces = units, pieces
        self.linear = nn.Linear(inputs, units * pieces)

    def forward(self, x):
        return self.linear(x).view(*x.shape[:-1], self.units, self.pieces).amax(-1)


class DLGM(nn.Module):
    """x [B, 784] -> the per-image negative ELBO [B] at one z ~ q_K(z | x)."""

    def __init__(self, num_layers: int, latent: int = 40, hidden: int = 400, pixels: int = 784):
        super().__init__()
        self.num_layers, self.latent = num_layers, latent
        self.encoder = Maxout(pixels, hidden)
        self.loc, self.scale = nn.Linear(hidden, latent), nn.Linear(hidden, latent)
        if num_layers:
            self.u = nn.Linear(hidden, num_layers * latent)
            self.w = nn.Linear(hidden, num_layers * latent)
            self.b = nn.Linear(hidden, num_layers)
            nn.init.zeros_(self.u.weight)
            nn.init.zeros_(self.u.bias)
        self.decoder = nn.Sequential(Maxout(latent, hidden), nn.Linear(hidden, pixels))

    def forward(self, x, eps=None):
        """The negative ELBO of each image at z = loc + scale * eps (eps ~ N(0, I) if None)."""
        h = self.encoder(x)
        loc, scale = self.loc(h), functional.softplus(self.scale(h))
        eps = torch.randn_like(loc) if eps is None else eps
        z = loc + scale * eps
        log_q = -(0.5 * eps.square() + scale.log() + 0.5 * LOG_2PI).sum(-1)
        if self.num_layers:
            shape = (x.shape[0], self.num_layers, self.latent)
            w = self.w(h).view(shape)
            norm_sq = w.square().sum(-1, keepdim=True)
            u = SOFTPLUS_INVERSE_OF_1 * w / norm_sq + self.u(h).view(shape)
            b = self.b(h)
            wu = (w * u).sum(-1, keepdim=True)
            u_hat = u + (functional.softplus(wu) - 1 - wu) * w / norm_sq  # w.u_hat > -1
            one_plus_m = functional.softplus(wu).squeeze(-1)  # 1 + w.u_hat, [B, K]
            for k in range(self.num_layers):
                t = torch.tanh((w[:, k] * z).sum(-1) + b[:, k])
                z = z + u_hat[:, k] * t[:, None]
                t2 = t.square()
                log_q = log_q - torch.log(t2 + (1 - t2) * one_plus_m[:, k])
        log_pz = -(0.5 * z.square() + 0.5 * LOG_2PI).sum(-1)
        logits = self.decoder(z)
        log_px_z = -functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        return log_q - log_pz - log_px_z


def trainer(num_layers: int, compile_step: bool = False, learning_rate: float = 5e-4):
    """(model, step): step(x) does one Adamax update on the mean negative ELBO of x, returns it."""
    model = DLGM(num_layers)
    optimizer = torch.optim.Adamax(model.parameters(), lr=learning_rate)

    def step(x):
        optimizer.zero_grad(set_to_none=True)
        loss = model(x).mean()
        loss.backward()
        optimizer.step()
        return loss

    return model, (torch.compile(step) if compile_step else step)
