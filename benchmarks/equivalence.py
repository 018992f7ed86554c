"""Does a peer compute the same function as jaxsr? Checked before anything is timed.

Every implementation loads jaxsr's exported weights and computes, on the same
two images: the eval-mode output ('forward'), the training-mode MSE loss
('loss') and the gradients of every trainable parameter ('grads', all tensors
as one vector). Each is compared by relative error in the 2-norm,
||a - ref|| / ||ref||, against a float64 reference: the plain-JAX twin run in
float64 (it shares no code with jaxsr's model, and PyTorch in float64 agrees
with it to about 1e-13).

Tolerances come from float32 precision, measured on the spot:

- noise(q) = max(error of the twin evaluated in float32, 16 * eps32): the
  rounding error float32 arithmetic puts on quantity q of this network with
  these weights (eps32 = 2**-23 = 1.19e-7). The floor stands for the few ulps
  a scalar picks up through ~20 layers; the twin's error is what it is for q
  (on the paper network's training-mode gradients at batch 2 it is ~2e-3:
  batch norm's backward pass over two images cancels heavily; on a GPU, with
  TF32 convolutions, everything is ~1e-3).
- a float32 implementation (jaxsr, the twin, the peer as timed) passes when
  its error <= 16 * noise(q): 16 covers different but correct summation orders
  (PyTorch's oneDNN kernels measured up to 4x the twin's error).
- a peer's float64 evaluation passes when its error <= 16 * noise(q) *
  eps64 / eps32: the same conditioning at float64's precision. This is the
  sharp test of the peer's code: a wrong weight, layer or loss shows as an
  error many orders of magnitude above it.

jaxsr computes in float32 or bfloat16 only, so it has the float32 check alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)
FLOOR_ULPS = 16
SAFETY = 16
QUANTITIES = ("forward", "loss", "grads")


def _grads(result: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(result[k], np.float64).ravel() for k in sorted(result) if k.startswith("grad/")])


def quantities(result: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"forward": np.asarray(result["forward"], np.float64).ravel(),
            "loss": np.asarray(result["loss"], np.float64).ravel(), "grads": _grads(result)}


def relative_error(a: np.ndarray, ref: np.ndarray) -> float:
    scale = np.linalg.norm(ref)
    return float(np.linalg.norm(a - ref) / scale) if scale else float(np.linalg.norm(a))


def _same_keys(result: dict, reference: dict) -> str | None:
    mine, want = set(result), set(reference)
    if mine == want:
        for k in want:
            if np.shape(result[k]) != np.shape(reference[k]):
                return f"{k}: shape {np.shape(result[k])}, reference {np.shape(reference[k])}"
        return None
    return f"missing {sorted(want - mine)[:3]}, unexpected {sorted(mine - want)[:3]}"


def tolerances(twin32: dict, reference: dict) -> dict[str, dict[str, float]]:
    """Per quantity: the float32 noise and the float32 and float64 tolerances derived from it."""
    ref, got = quantities(reference), quantities(twin32)
    out = {}
    for q in QUANTITIES:
        noise = max(relative_error(got[q], ref[q]), FLOOR_ULPS * EPS32)
        out[q] = {"float32_noise": noise, "float32": SAFETY * noise, "float64": SAFETY * noise * EPS64 / EPS32}
    return out


def compare(result: dict, reference: dict, tol: dict, precision: str) -> dict[str, Any]:
    """{'ok', 'errors': {q: relative error}, 'tolerance': {q: ...}, 'why'} for one evaluation."""
    mismatch = _same_keys(result, reference)
    if mismatch:
        return {"ok": False, "precision": precision, "why": "different parameters: " + mismatch}
    ref, got = quantities(reference), quantities(result)
    errors = {q: relative_error(got[q], ref[q]) for q in QUANTITIES}
    limits = {q: tol[q][precision] for q in QUANTITIES}
    failed = [q for q in QUANTITIES if not errors[q] <= limits[q]]  # a NaN fails too
    out = {"ok": not failed, "precision": precision, "errors": errors, "tolerance": limits}
    if failed:
        out["why"] = "; ".join(f"{q} off by {errors[q]:.2e} (tolerance {limits[q]:.2e})" for q in failed)
    return out
