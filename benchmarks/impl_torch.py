"""The PyTorch peer: the paper network in PyTorch eager, as the authors ran it.

Built from benchmarks.net_spec with modules named like jaxsr's NNX paths, so
jaxsr's exported weights load one to one (HWIO kernels transposed to OIHW).
Default NCHW layout and eager execution; Adam and MSE as jaxsr trains.
Optional: `pip install '.[peer]'`; the suite records it as skipped otherwise.
"""

from __future__ import annotations

import importlib.util
import types

import numpy as np

from benchmarks import net_spec, worker


def missing() -> str | None:
    """Why the peer cannot run here, or None."""
    if importlib.util.find_spec("torch") is None:
        return "PyTorch is not installed (pip install '.[peer]')"
    return None


def build(model_config):
    """An nn.Module whose parameter names are jaxsr's NNX paths with '/' as '.'."""
    import torch
    from torch import nn

    slope = float(model_config.negative_slope)

    def stage(layers):
        modules = nn.ModuleDict()
        order = []
        for layer in layers:
            if isinstance(layer, net_spec.Conv):
                modules[layer.name.replace("/", "__")] = nn.Conv2d(layer.cin, layer.cout, 3, padding=1)
                order.append((layer.name.replace("/", "__"), layer.activation))
            elif isinstance(layer, net_spec.Norm):
                modules[layer.name.replace("/", "__")] = nn.BatchNorm2d(layer.features, eps=1e-5, momentum=0.1)
                order.append((layer.name.replace("/", "__"), False))
            else:
                order.append((layer.kind, False))
        return modules, order

    class AutoEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self._enc = stage(net_spec.encoder_layers(model_config))
            self.decoder, self._dec = stage(net_spec.decoder_layers(model_config))

        def _run(self, modules, order, x):
            for name, act in order:
                if name == "pool":
                    x = nn.functional.avg_pool2d(x, 2)
                elif name == "upsample":
                    x = nn.functional.interpolate(x, scale_factor=2, mode="nearest")
                else:
                    x = modules[name](x)
                    if act:
                        x = nn.functional.leaky_relu(x, slope)
            return x

        def forward(self, x):
            return self._run(self.decoder, self._dec, self._run(self.encoder, self._enc, x))

    torch.manual_seed(0)
    return AutoEncoder()


# NNX leaf name -> torch attribute, for convolutions and batch norms.
_CONV = {"kernel": "weight", "bias": "bias"}
_NORM = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def _torch_name(path: str) -> tuple[str, str, str]:
    """'encoder/blocks/0/conv1/kernel' -> ('encoder', 'encoder__blocks__0__conv1', 'kernel')."""
    module, leaf = path.rsplit("/", 1)
    return module.split("/", 1)[0], module.replace("/", "__"), leaf


def load_weights(model, weights: dict[str, np.ndarray]) -> None:
    """Copies jaxsr's arrays into `model`; every tensor must be matched exactly once."""
    import torch

    seen = set()
    with torch.no_grad():
        for path, value in weights.items():
            stage, module_name, leaf = _torch_name(path)
            module = getattr(model, stage)[module_name]
            is_norm = isinstance(module, torch.nn.BatchNorm2d)
            target = getattr(module, (_NORM if is_norm else _CONV)[leaf])
            value = np.asarray(value)
            if leaf == "kernel":
                value = value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
            if tuple(target.shape) != value.shape:
                raise ValueError(f"{path}: shape {value.shape} does not fit the peer's {tuple(target.shape)}")
            target.copy_(torch.from_numpy(np.ascontiguousarray(value)))
            seen.add(id(target))
    expected = {id(t) for t in list(model.parameters()) + [b for n, b in model.named_buffers() if "running" in n]}
    if seen != expected:
        raise ValueError(f"{len(expected - seen)} peer tensors got no weight from jaxsr's export")


def gradients(model) -> dict[str, np.ndarray]:
    """'grad/<NNX path>' -> gradient in jaxsr's layout."""
    import torch

    out = {}
    for stage in ("encoder", "decoder"):
        for module_name, module in getattr(model, stage).items():
            table = _NORM if isinstance(module, torch.nn.BatchNorm2d) else _CONV
            for leaf, attr in table.items():
                tensor = getattr(module, attr)
                if tensor.grad is None:
                    continue
                g = tensor.grad.detach().cpu().numpy()
                if leaf == "kernel":
                    g = g.transpose(2, 3, 1, 0)  # OIHW -> HWIO
                out["grad/" + module_name.replace("__", "/") + "/" + leaf] = g
    return out


class Worker(worker.Impl):
    """The peer in its own process (benchmarks.worker): `threads` intra-op threads."""

    def __init__(self, threads: int):
        super().__init__(threads)
        import torch

        torch.set_num_threads(threads)
        # XLA runs float32 convolutions in TF32 on Ampere and later GPUs; let cuDNN do the same.
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cuda.matmul.allow_tf32 = True
        self.device = "cpu"

    def info(self) -> dict:
        import os

        import torch

        from jaxsr import host_memory

        return {"framework": f"torch {torch.__version__} eager", "threads": torch.get_num_threads(),
                "keep_freed_memory": host_memory.active,
                "interop_threads": torch.get_num_interop_threads(), "cpus": sorted(os.sched_getaffinity(0)),
                "cuda": torch.cuda.is_available(), "thread_rule": "torch.set_num_threads"}

    def load(self, model: dict, weights: str, learning_rate: float, device: str = "cpu") -> dict:
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("this PyTorch build has no CUDA device")
        self.device = device
        self.model_config = types.SimpleNamespace(**model)
        self.weights = dict(np.load(weights))
        self.learning_rate = learning_rate
        net = self._model()
        return {"parameters": int(sum(p.numel() for p in net.parameters()))}

    def _model(self, dtype=None):
        import torch

        net = build(self.model_config)
        load_weights(net, self.weights)
        return net.to(device=self.device, dtype=dtype or torch.float32)

    def _images(self, x: np.ndarray, dtype=None):
        import torch

        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(self.device, dtype or torch.float32)

    def check(self, inputs: str, out: str, float64: bool = False) -> None:
        import torch

        dtype = torch.float64 if float64 else torch.float32
        x = np.load(inputs)["x"]
        net = self._model(dtype)
        images = self._images(x, dtype)
        net.eval()
        with torch.no_grad():
            forward = net(images).cpu().numpy().transpose(0, 2, 3, 1)
        net.train()
        loss = torch.mean((net(images) - images) ** 2)
        loss.backward()
        np.savez(out, forward=forward, loss=loss.detach().cpu().numpy(), **gradients(net))

    def build(self, kind: str, batch: int, image_size: int, dtype: str):
        import torch

        if self.device == "cuda":
            torch.cuda.empty_cache()
        net = self._model()
        images = self._images(worker.random_images(batch, image_size))
        autocast = torch.autocast(self.device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
        if kind == "infer":
            net.eval()

            def infer():
                with torch.inference_mode(), autocast:
                    return net(images)

            return infer
        net.train()
        opt = torch.optim.Adam(net.parameters(), lr=self.learning_rate)

        def train_step():
            opt.zero_grad(set_to_none=True)
            with autocast:
                loss = torch.mean((net(images).float() - images) ** 2)
            loss.backward()
            opt.step()
            return loss

        return train_step

    def block(self, out) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
