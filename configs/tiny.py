"""A tiny configuration: seconds per step on one CPU core.

The tests and `jaxsr demo --quick` run it to check the plumbing end to end;
nothing it trains is meant to be good.
"""

import ml_collections

from jaxsr.configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.data.update(crop_size=32, triplets=True)
    c.model.update(num_blocks=2, base_features=4, bottleneck_features=8, latent_features=8)
    c.loss.update(interp_weight=1.0)
    c.optim.update(learning_rate=1e-3)
    c.train.update(steps=4, batch_size=8, eval_every=2, checkpoint_every=2, keep_checkpoints=2, log_every=1, eval_batches=1)
    return c
