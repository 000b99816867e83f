"""Pyro's planar transform (`pyro.distributions.transforms.Planar`) in a TransformedDistribution,
trained on the reverse KL with `rsample` and `log_prob` (which reuses the cached inverse).

    python benchmarks/peers/pyro_planar.py --layers 32 --dim 2
"""

import common  # noqa: I001  (first: it starts the import clock)

import os

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch

imported = common.time.perf_counter()


def main():
    args = common.arguments(per_call=False)
    torch.set_num_threads(os.cpu_count())
    K, D, B = args.layers, args.dim, args.batch
    scales = torch.tensor(common.gaussian_scales(D))

    def log_p(z):
        if D == 2:
            z1 = z[:, 0]
            ring = -0.5 * ((z.norm(dim=1) - 2) / 0.4) ** 2
            modes = torch.logaddexp(-0.5 * ((z1 - 2) / 0.6) ** 2, -0.5 * ((z1 + 2) / 0.6) ** 2)
            return ring + modes
        return -0.5 * ((z / scales) ** 2).sum(1)

    box = {}

    def make():
        torch.manual_seed(0)
        transforms = [T.Planar(D) for _ in range(K)]
        base = dist.Normal(torch.zeros(D), torch.ones(D)).to_event(1)
        box["flow"] = dist.TransformedDistribution(base, transforms)
        box["optimizer"] = torch.optim.Adam(torch.nn.ModuleList(transforms).parameters(), lr=1e-2)

    def step():
        box["optimizer"].zero_grad(set_to_none=True)
        z = box["flow"].rsample((B,))
        value = (box["flow"].log_prob(z) - log_p(z)).mean()
        value.backward()
        box["optimizer"].step()
        return value

    common.timed(make, step, args, imported, block=lambda x: x.item())


if __name__ == "__main__":
    main()
