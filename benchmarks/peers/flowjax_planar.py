"""flowjax's planar flow (`flowjax.flows.planar_flow`) with its ElboLoss, under our own jit.

    python benchmarks/peers/flowjax_planar.py --layers 32 --dim 2 --per-call 10

The maps run in the sampling direction (`invert=False`, the cheap one for the
reverse KL), the N(0, I) base is fixed (`paramax.non_trainable`), and N steps
of optax Adam run per compiled call under lax.scan, as flowjax's own `fit`
would not (it steps from Python).
"""

import common  # noqa: I001  (first: it starts the import clock)

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import paramax
from flowjax.distributions import Normal
from flowjax.flows import planar_flow
from flowjax.train.losses import ElboLoss

imported = common.time.perf_counter()


def main():
    args = common.arguments()
    K, D, B = args.layers, args.dim, args.batch
    scales = jnp.asarray(common.gaussian_scales(D), jnp.float32)

    def log_p(z):  # one point [D] -> []
        if D == 2:
            ring = -0.5 * ((jnp.linalg.norm(z) - 2) / 0.4) ** 2
            modes = jnp.logaddexp(-0.5 * ((z[0] - 2) / 0.6) ** 2, -0.5 * ((z[0] + 2) / 0.6) ** 2)
            return ring + modes
        return -0.5 * jnp.sum((z / scales) ** 2)

    loss = ElboLoss(log_p, num_samples=B)
    optimizer = optax.adam(1e-2)
    box = {}

    def make():
        flow = planar_flow(
            jax.random.key(0), base_dist=Normal(jnp.zeros(D)), flow_layers=K, invert=False
        )
        flow = eqx.tree_at(lambda f: f.base_dist, flow, replace_fn=paramax.non_trainable)
        params, static = eqx.partition(
            flow, eqx.is_inexact_array, is_leaf=lambda leaf: isinstance(leaf, paramax.NonTrainable)
        )
        box.update(params=params, static=static, opt_state=optimizer.init(params))
        box["key"] = jax.random.key(1)

    @eqx.filter_jit
    def call(params, static, opt_state, key):
        def step(carry, key):
            params, opt_state = carry
            value, grads = eqx.filter_value_and_grad(loss)(params, static, key)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (eqx.apply_updates(params, updates), opt_state), value

        return jax.lax.scan(step, (params, opt_state), jax.random.split(key, args.per_call))

    def one_call():
        box["key"], key = jax.random.split(box["key"])
        (box["params"], box["opt_state"]), values = call(
            box["params"], box["static"], box["opt_state"], key
        )
        return values[-1]

    common.timed(make, one_call, args, imported, block=lambda x: x.block_until_ready())


if __name__ == "__main__":
    main()
