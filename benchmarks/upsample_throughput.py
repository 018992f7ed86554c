"""How fast is upsampling, and is archive I/O hidden behind device compute?

1. Latent interpolation of an ACDC-sized 4D volume (216 x 256 x 10 slices x 30
   frames at 1.5 x 1.5 x 10 mm, factor 2): device compute only (preprocessed
   stack in, new slices out) and the whole `upsample_volume` (preprocessing and
   restoring the source grid on the CPU included), in slices/s.
2. scipy.ndimage linear and cubic B-spline (map_coordinates, order 1 and 3) on
   the same volume and output grid, in slices/s.
3. `reprocess_archive` over N such volumes (.nii.gz, int16 as ACDC ships them)
   end to end, against compute only (N x the compute time of 1.). The ratio is
   1.0 when reading, preprocessing and writing are completely hidden.

    python -m benchmarks.upsample_throughput [--checkpoint DIR] [--out results.json]

Without --checkpoint the model is the paper configuration with random weights
(same speed as a trained one).
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import tempfile
import time

import ml_collections
import nibabel as nib
import numpy as np
from scipy import ndimage

from benchmarks import common

log = logging.getLogger("benchmarks.upsample_throughput")


def paper_config() -> ml_collections.ConfigDict:
    """The paper's architecture (Sec. 3): 4 blocks from 32 kernels, 256 then 16."""
    try:
        from configs.acdc_paper import get_config  # type: ignore

        return get_config()
    except ImportError:
        return ml_collections.ConfigDict(
            {
                "seed": 0,
                "data": {"target_spacing_mm": 1.4},
                "model": {
                    "num_blocks": 4,
                    "base_features": 32,
                    "bottleneck_features": 256,
                    "latent_features": 16,
                    "dtype": "float32",
                    "negative_slope": 0.01,
                },
            }
        )


def load_model(checkpoint: str | None):
    if checkpoint:
        from jaxsr.train.checkpoint import load_for_inference

        model, config = load_for_inference(checkpoint)
        return model, config, f"checkpoint {checkpoint}"
    from flax import nnx

    config = paper_config()
    try:
        from jaxsr.models.autoencoder import AutoEncoder
    except ImportError:
        # Only until jaxsr.models lands: the paper's layer shapes, for timing.
        log.warning("jaxsr.models.autoencoder missing: timing a paper-shaped stand-in")
        return _PaperShapedAE(config.model, nnx.Rngs(0)), config, "paper-shaped stand-in, random init"
    model = AutoEncoder(config.model, rngs=nnx.Rngs(0))
    model.eval()
    return model, config, "paper config, random init"


def _PaperShapedAE(model_config, rngs):
    """Sec. 3 of the paper: 4 blocks of two 3x3 convs + BN + 2x2 average pooling
    (32 kernels, doubling), then 3x3 convs of 256 and 16; the decoder mirrors it
    with nearest-neighbour upsampling."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    slope = float(model_config.negative_slope)
    blocks = int(model_config.num_blocks)
    widths = [int(model_config.base_features) * 2**i for i in range(blocks)]

    class Net(nnx.Module):
        def __init__(self):
            def conv(cin, cout):
                return nnx.Conv(cin, cout, (3, 3), rngs=rngs)

            cin = 1
            self.e1, self.e2, self.ebn = nnx.List(), nnx.List(), nnx.List()
            for w in widths:
                self.e1.append(conv(cin, w))
                self.e2.append(conv(w, w))
                self.ebn.append(nnx.BatchNorm(w, rngs=rngs))
                cin = w
            bottleneck, latent = int(model_config.bottleneck_features), int(model_config.latent_features)
            self.e_mid, self.e_out = conv(cin, bottleneck), conv(bottleneck, latent)
            self.d_in = conv(latent, bottleneck)
            cin = bottleneck
            self.d1, self.d2, self.dbn = nnx.List(), nnx.List(), nnx.List()
            for w in reversed(widths):
                self.d1.append(conv(cin, w))
                self.d2.append(conv(w, w))
                self.dbn.append(nnx.BatchNorm(w, rngs=rngs))
                cin = w
            self.d_mid, self.d_out = conv(cin, widths[0]), conv(widths[0], 1)

        def encode(self, x):
            act = lambda y: jax.nn.leaky_relu(y, slope)  # noqa: E731
            for c1, c2, bn in zip(self.e1, self.e2, self.ebn):
                x = nnx.avg_pool(bn(act(c2(act(c1(x))))), (2, 2), strides=(2, 2))
            return self.e_out(act(self.e_mid(x)))

        def decode(self, z):
            act = lambda y: jax.nn.leaky_relu(y, slope)  # noqa: E731
            x = act(self.d_in(z))
            for c1, c2, bn in zip(self.d1, self.d2, self.dbn):
                x = bn(act(c2(act(c1(x)))))
                x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # nearest neighbour
            return self.d_out(act(self.d_mid(x)))

    net = Net()
    net.eval()
    return net


def acdc_like_volume(shape, spacing, seed: int) -> nib.Nifti1Image:
    """int16 cine-like phantom: a beating bright disc on textured background."""
    rng = np.random.default_rng(seed)
    nx, ny, nz, nt = shape
    xx, yy = np.meshgrid(np.linspace(-1, 1, nx), np.linspace(-1, 1, ny), indexing="ij")
    data = np.empty(shape, np.int16)
    background = ndimage.gaussian_filter(rng.normal(size=(nx, ny)), 4) * 300 + 200
    for t in range(nt):
        radius = 0.25 + 0.05 * np.sin(2 * np.pi * t / nt)
        for z in range(nz):
            r = radius * (1 - 0.06 * z)
            disc = (xx**2 + yy**2) < r**2
            frame = background + 700 * disc + rng.normal(scale=20, size=(nx, ny))
            data[:, :, z, t] = np.clip(frame, 0, 4000).astype(np.int16)
    affine = np.diag(list(spacing) + [1.0])
    image = nib.Nifti1Image(data, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    image.header.set_zooms(tuple(spacing) + (0.03,))
    return image


def scipy_resample(data: np.ndarray, positions: np.ndarray, order: int) -> np.ndarray:
    """Through-plane resampling per frame with scipy.ndimage.map_coordinates."""
    nx, ny, _, nt = data.shape
    grid = np.meshgrid(np.arange(nx), np.arange(ny), positions, indexing="ij")
    coords = np.stack(grid).astype(np.float64)
    out = np.empty((nx, ny, positions.size, nt), np.float32)
    for t in range(nt):
        out[..., t] = ndimage.map_coordinates(data[..., t], coords, order=order, mode="mirror")
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--shape", default="216,256,10,30", help="x,y,slices,frames")
    parser.add_argument("--spacing", default="1.5,1.5,10", help="mm")
    parser.add_argument("--factor", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--archive-volumes", type=int, default=8)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--out", default=None, help="JSON results file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    from jaxsr import interpolate
    from jaxsr.io.nifti import load
    from jaxsr.reprocess import UpsampleSettings, reprocess_archive

    shape = tuple(int(s) for s in args.shape.split(","))
    spacing = tuple(float(s) for s in args.spacing.split(","))
    model, config, model_source = load_model(args.checkpoint)
    interpolator = interpolate.LatentInterpolator(
        model, batch_size=args.batch_size, size_multiple=interpolate.size_multiple_for(config)
    )
    result = {"benchmark": "upsample_throughput", "environment": common.environment(), "model": model_source}
    result["config"] = config.to_dict()
    result["setup"] = {"shape": shape, "spacing_mm": spacing, "factor": args.factor, "batch_size": args.batch_size}

    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        source = tmp / "one.nii.gz"
        nib.save(acdc_like_volume(shape, spacing, 0), str(source))
        volume = load(source)
        prepared = interpolate.prepare_volume(volume, config, factor=args.factor)
        n_out = prepared.positions.size * volume.n_frames
        n_new = (prepared.positions.size - volume.n_slices) * volume.n_frames
        log.info("stack %s -> %d output slices (%d new)", prepared.stack.shape, n_out, n_new)

        compute = common.time_repeats(
            lambda: interpolator.interpolate_stack(prepared.stack, prepared.positions), repeats=args.repeats, warmup=1,
            block=lambda x: x,  # already a host array
        )  # fmt: skip
        result["latent_compute"] = {
            **compute.summary(n_out, "output_slices"),
            "new_slices_per_s": n_new / compute.median_s,
            "encoded_slices_per_s": volume.n_slices * volume.n_frames / compute.median_s,
            "preprocessed_shape": list(prepared.stack.shape),
        }
        full = common.time_repeats(
            lambda: interpolate.upsample_volume(interpolator, config, volume, factor=args.factor),
            repeats=max(1, args.repeats // 2), warmup=1, block=lambda x: x,
        )  # fmt: skip
        result["upsample_volume_full"] = full.summary(n_out, "output_slices")
        t0 = time.perf_counter()
        interpolate.prepare_volume(volume, config, factor=args.factor)
        result["cpu_preprocess_s"] = time.perf_counter() - t0
        interpolated = interpolator.interpolate_stack(prepared.stack, prepared.positions)
        t0 = time.perf_counter()
        interpolate.finish_volume(prepared, interpolated)
        result["cpu_restore_s"] = time.perf_counter() - t0

        data = volume.data
        for name, order in (("scipy_linear", 1), ("scipy_bspline_cubic", 3)):
            timing = common.time_repeats(
                lambda: scipy_resample(data, prepared.positions, order), repeats=max(2, args.repeats), warmup=1,
                block=lambda x: x,
            )  # fmt: skip
            result[name] = timing.summary(n_out, "output_slices")

        # Archive: N volumes end to end vs compute only.
        archive_in, archive_out = tmp / "archive", tmp / "out"
        for i in range(args.archive_volumes):
            path = archive_in / f"patient{i:03d}" / "cine_4d.nii.gz"
            path.parent.mkdir(parents=True)
            nib.save(acdc_like_volume(shape, spacing, i + 1), str(path))
        in_bytes = sum(p.stat().st_size for p in archive_in.rglob("*.nii.gz"))
        summary = reprocess_archive(
            interpolator, config, archive_in, archive_out, UpsampleSettings(factor=args.factor), workers=args.workers, progress=False
        )
        assert not summary.failed, summary.failed
        compute_only = args.archive_volumes * compute.median_s
        out_bytes = sum(p.stat().st_size for p in archive_out.rglob("*.nii.gz"))
        result["archive"] = {
            "volumes": args.archive_volumes,
            "workers": args.workers,
            "input_bytes": in_bytes,
            "output_bytes": out_bytes,
            "end_to_end_s": summary.seconds,
            "volumes_per_s": args.archive_volumes / summary.seconds,
            "compute_only_s": compute_only,
            "compute_in_run_s": summary.compute_seconds,
            "end_to_end_over_compute": summary.seconds / compute_only,
        }
    log.info("latent compute: %.1f output slices/s", result["latent_compute"]["output_slices_per_s"]["median"])
    log.info("archive end-to-end / compute: %.2f", result["archive"]["end_to_end_over_compute"])
    common.write_json(result, args.out)
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2, default=str))
