"""The train state: the model and its optimizer, as the loop, the benchmarks and the tests make it."""

from __future__ import annotations

from flax import nnx

from jaxsr.models.autoencoder import AutoEncoder
from jaxsr.train import step as step_lib


def init_train_state(config) -> tuple[AutoEncoder, nnx.Optimizer]:
    """(model, optimizer) at step 0; parameters drawn from `config.seed`."""
    model = AutoEncoder(config.model, rngs=nnx.Rngs(int(config.seed)))
    tx = step_lib.make_optimizer(config.optim, int(config.train.steps))
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)
