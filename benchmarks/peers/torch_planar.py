"""Hand-written PyTorch: the step eagerly or under torch.compile, z as [D, B] or [B, D].

    python benchmarks/peers/torch_planar.py --layers 32 --dim 2 --layout DB --compile

Parameters are [K, D] tensors (one optimizer entry each, not 3K small ones),
Adam 1e-2 with `foreach`, as many threads as this CPU has.
"""

import common  # noqa: I001  (first: it starts the import clock)

import os

import torch

imported = common.time.perf_counter()


def main():
    args = common.arguments(layouts=("DB", "BD"), per_call=False, flags=("compile",))
    torch.set_num_threads(os.cpu_count())
    K, D, B, rows = args.layers, args.dim, args.batch, args.layout == "DB"
    scales = torch.tensor(common.gaussian_scales(D))

    def log_p(z):
        z1, z2 = (z[0], z[1]) if rows else (z[:, 0], z[:, 1])
        if D == 2:
            ring = -0.5 * ((torch.sqrt(z1**2 + z2**2) - 2) / 0.4) ** 2
            modes = torch.logaddexp(-0.5 * ((z1 - 2) / 0.6) ** 2, -0.5 * ((z1 + 2) / 0.6) ** 2)
            return ring + modes
        s = scales[:, None] if rows else scales
        return -0.5 * ((z / s) ** 2).sum(0 if rows else 1)

    box = {}

    def loss(u, w, b):
        eps = torch.randn((D, B) if rows else (B, D))
        log_q = -0.5 * (eps**2).sum(0 if rows else 1) - 0.5 * D * common.LOG_2PI
        wu = (w * u).sum(1, keepdim=True)
        u_hat = u + (torch.nn.functional.softplus(wu) - 1 - wu) * w / (w * w).sum(1, keepdim=True)
        m = (w * u_hat).sum(1)
        z, log_det = eps, 0.0
        for k in range(K):
            if rows:
                t = torch.tanh(w[k] @ z + b[k])
                z = z + u_hat[k][:, None] * t[None, :]
            else:
                t = torch.tanh(z @ w[k] + b[k])
                z = z + t[:, None] * u_hat[k][None, :]
            log_det = log_det + torch.log(torch.abs(1 + (1 - t**2) * m[k]))
        return (log_q - log_det - log_p(z)).mean()

    def step():
        optimizer = box["optimizer"]
        optimizer.zero_grad(set_to_none=True)
        value = box["loss"](*box["params"])
        value.backward()
        optimizer.step()
        return value

    def make():  # torch.compile compiles at the first call, inside the first step's time
        torch.manual_seed(0)
        w = torch.rand(K, D)
        u = common.SOFTPLUS_INVERSE_OF_1 * w / (w**2).sum(1, keepdim=True)
        params = [p.requires_grad_() for p in (u, w, torch.rand(K))]
        box["params"] = params
        box["optimizer"] = torch.optim.Adam(params, lr=1e-2, foreach=True)
        box["loss"] = torch.compile(loss) if args.compile else loss

    common.timed(make, step, args, imported, block=lambda x: x.item())


if __name__ == "__main__":
    main()
