"""normflows' planar flow through its documented reverse-KL route (`NormalizingFlow.reverse_kld`).

python benchmarks/peers/normflows_planar.py --layers 32 --dim 2
"""

import common  # noqa: I001  (first: it starts the import clock)

import os

import normflows as nf
import torch

imported = common.time.perf_counter()


def main():
    args = common.arguments(per_call=False)
    torch.set_num_threads(os.cpu_count())
    K, D, B = args.layers, args.dim, args.batch
    scales = torch.tensor(common.gaussian_scales(D))

    class Target(nf.distributions.Target):
        def log_prob(self, z):
            if D == 2:
                z1 = z[:, 0]
                ring = -0.5 * ((z.norm(dim=1) - 2) / 0.4) ** 2
                modes = torch.logaddexp(-0.5 * ((z1 - 2) / 0.6) ** 2, -0.5 * ((z1 + 2) / 0.6) ** 2)
                return ring + modes
            return -0.5 * ((z / scales) ** 2).sum(1)

    box = {}

    def make():
        torch.manual_seed(0)
        flows = [nf.flows.Planar((D,)) for _ in range(K)]
        model = nf.NormalizingFlow(
            q0=nf.distributions.DiagGaussian(D, trainable=False), flows=flows, p=Target()
        )
        box["model"] = model
        box["optimizer"] = torch.optim.Adam(model.parameters(), lr=1e-2)

    def step():
        box["optimizer"].zero_grad(set_to_none=True)
        value = box["model"].reverse_kld(num_samples=B)
        value.backward()
        box["optimizer"].step()
        return value

    common.timed(make, step, args, imported, block=lambda x: x.item())


if __name__ == "__main__":
    main()
