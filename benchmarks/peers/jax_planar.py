"""Hand-written JAX: the whole step under one jit, lax.scan over [K, D] parameters, optax Adam.

    python benchmarks/peers/jax_planar.py --layers 32 --dim 2 --layout DB --per-call 10

z is kept as [D, B] (`--layout DB`, what ran fastest on this CPU) or [B, D];
`--per-call N` runs N steps per compiled call with lax.scan.
"""

import common  # noqa: I001  (first: it starts the import clock)

import jax
import jax.numpy as jnp
import optax

imported = common.time.perf_counter()


def main():
    args = common.arguments(layouts=("DB", "BD"))
    K, D, B, rows = args.layers, args.dim, args.batch, args.layout == "DB"
    scales = jnp.asarray(common.gaussian_scales(D), jnp.float32)

    def log_p(z):  # z: [D, B] or [B, D] -> [B]
        z1, z2 = (z[0], z[1]) if rows else (z[:, 0], z[:, 1])
        if D == 2:
            ring = -0.5 * ((jnp.sqrt(z1**2 + z2**2) - 2) / 0.4) ** 2
            modes = jnp.logaddexp(-0.5 * ((z1 - 2) / 0.6) ** 2, -0.5 * ((z1 + 2) / 0.6) ** 2)
            return ring + modes
        s = scales[:, None] if rows else scales
        return -0.5 * jnp.sum((z / s) ** 2, axis=0 if rows else 1)

    def loss(params, key):
        eps = jax.random.normal(key, (D, B) if rows else (B, D))
        log_q = -0.5 * jnp.sum(eps**2, axis=0 if rows else 1) - 0.5 * D * common.LOG_2PI

        def layer(carry, p):
            z, log_det = carry
            u, w, b = p
            wu = w @ u
            u_hat = u + (jax.nn.softplus(wu) - 1 - wu) * w / (w @ w)
            if rows:
                t = jnp.tanh(w @ z + b)  # [B]
                z = z + u_hat[:, None] * t[None, :]
            else:
                t = jnp.tanh(z @ w + b)
                z = z + t[:, None] * u_hat[None, :]
            m = w @ u_hat
            return (z, log_det + jnp.log(jnp.abs(1 + (1 - t**2) * m))), None

        zero = jnp.zeros(B)
        (z, log_det), _ = jax.lax.scan(layer, (eps, zero), (params["u"], params["w"], params["b"]))
        return jnp.mean(log_q - log_det - log_p(z))

    optimizer = optax.adam(1e-2)

    def step(state, key):
        params, opt_state = state
        value, grads = jax.value_and_grad(loss)(params, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    @jax.jit
    def call(state, key):
        keys = jax.random.split(key, args.per_call)
        return jax.lax.scan(step, state, keys)

    box = {}

    def make():
        key = jax.random.PRNGKey(0)
        kw, kb = jax.random.split(key)
        w = jax.random.uniform(kw, (K, D))
        u = common.SOFTPLUS_INVERSE_OF_1 * w / jnp.sum(w**2, axis=1, keepdims=True)
        params = {"u": u, "w": w, "b": jax.random.uniform(kb, (K,))}
        box["state"], box["key"] = (params, optimizer.init(params)), key

    def one_call():
        box["key"], key = jax.random.split(box["key"])
        box["state"], values = call(box["state"], key)
        return values[-1]

    common.timed(make, one_call, args, imported, block=lambda x: x.block_until_ready())


if __name__ == "__main__":
    main()
