"""Stand-ins used ONLY while the project's own modules are missing from the tree.

Every figure measured with one of these says so in the JSON ('model_source',
'step_source'); once jaxsr.models.autoencoder, jaxsr.train.step and configs/*.py
exist the suites use those instead and nothing here runs.
"""

from __future__ import annotations

import ml_collections


def config(name: str) -> ml_collections.ConfigDict:
    """The paper's (Sec. 3) or a follow-up (2 blocks, 128 latent channels) configuration."""
    followup = "followup" in name
    return ml_collections.ConfigDict({
        "name": f"{name} (stand-in config)",
        "seed": 0,
        "data": {"crop_size": 128, "target_spacing_mm": 1.4},
        "model": {"num_blocks": 2 if followup else 4, "base_features": 32, "bottleneck_features": 256,
                  "latent_features": 128 if followup else 16, "dtype": "float32", "negative_slope": 0.01},
        "loss": {"interp_weight": 0.0, "interp_ssim_weight": 0.0},
        "optim": {"learning_rate": 1e-5, "warmup_steps": 0, "schedule": "constant", "clip_norm": 0.0},
        "train": {"steps": 100, "batch_size": 32, "eval_every": 50, "checkpoint_every": 50,
                  "keep_checkpoints": 1, "log_every": 10, "eval_batches": 1},
    })


def autoencoder(model_config, rngs):
    """The paper's architecture in NNX, compute dtype from the config, float32 parameters."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    slope = float(model_config.negative_slope)
    dtype = jnp.dtype(model_config.get("dtype", "float32"))
    widths = [int(model_config.base_features) * 2**i for i in range(int(model_config.num_blocks))]
    bottleneck, latent = int(model_config.bottleneck_features), int(model_config.latent_features)

    def conv(cin, cout):
        return nnx.Conv(cin, cout, (3, 3), padding=1, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)

    def bn(c):
        return nnx.BatchNorm(c, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)

    def act(x):
        return jax.nn.leaky_relu(x, slope)

    class AutoEncoder(nnx.Module):
        def __init__(self):
            self.enc, cin = nnx.List(), 1
            for w in widths:
                self.enc.append(nnx.List([conv(cin, w), conv(w, w), bn(w)]))
                cin = w
            self.e_mid, self.e_out = conv(cin, bottleneck), conv(bottleneck, latent)
            self.d_in, cin = conv(latent, bottleneck), bottleneck
            self.dec = nnx.List()
            for w in reversed(widths):
                self.dec.append(nnx.List([conv(cin, w), conv(w, w), bn(w)]))
                cin = w
            self.d_mid, self.d_out = conv(cin, cin), conv(cin, 1)

        def encode(self, x):
            x = x.astype(dtype)
            for c1, c2, norm in self.enc:
                x = nnx.avg_pool(norm(act(c2(act(c1(x))))), (2, 2), strides=(2, 2))
            return self.e_out(act(self.e_mid(x)))

        def decode(self, z):
            x = act(self.d_in(z.astype(dtype)))
            for c1, c2, norm in self.dec:
                x = norm(act(c2(act(c1(x)))))
                x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
            return self.d_out(act(self.d_mid(x))).astype(jnp.float32)

        def __call__(self, x):
            return self.decode(self.encode(x))

    return AutoEncoder()


def tf_train_batches(images, *, crop_size: int, batch_size: int, seed: int = 0, gamma_range=(0.7, 1.5)):
    """tf.data as the paper trains: random 128 crops, 90-degree rotations, random gamma.

    images: (N, H, W) float32 in [0, 1], H and W >= crop_size. Yields numpy
    (batch, crop, crop, 1) forever.
    """
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    ds = tf.data.Dataset.from_tensor_slices(images[..., None]).repeat().shuffle(4096, seed=seed)

    def augment(image):
        image = tf.image.random_crop(image, (crop_size, crop_size, 1), seed=seed)
        image = tf.image.rot90(image, tf.random.uniform((), 0, 4, tf.int32))
        gamma = tf.random.uniform((), gamma_range[0], gamma_range[1])
        return tf.clip_by_value(image, 0.0, 1.0) ** gamma

    ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.as_numpy_iterator()
