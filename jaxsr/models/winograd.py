"""Winograd F(2x2,3x3) and F(4x4,3x3): the model's 3x3 'same' convolutions with fewer multiplies.

A drop-in for `lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=('NHWC',
'HWIO', 'NHWC'))`. Per output tile of m x m pixels (alpha = m + 2 input pixels a side, overlapping by
2), Lavin & Gray (2016, "Fast algorithms for convolutional neural networks"):

    Y = A^T [ (G g G^T) ⊙ (B^T d B) ] A

and the sum over input channels of the ⊙ is one batched matmul over the alpha² tile positions,
[alpha², tiles, cin] @ [alpha², cin, cout]: m²·9 multiplies per output pixel and channel pair become
alpha², 2.25x fewer for F(2x2), 4x fewer for F(4x4).

The transforms come from interpolation points by the Toom-Cook construction (`transforms`), solved
exactly in rationals: F(2x2) uses 0, ±1, ∞ (Lavin & Gray's matrices); F(4x4) uses 0, ±1, ±1/2, ∞,
after Barabasz et al. (2020, "Error analysis and improving the accuracy of Winograd convolution for
deep neural networks"), who found such points more accurate than Lavin & Gray's 0, ±1, ±2, ∞. On this
network the two sets measured alike (benchmarks/winograd_accuracy.py: worst float32 error over a
trained model's convs 4.0e-7 / 1.2e-6 / 6.6e-7 fwd / dx / dW with ±1/2, 4.2e-7 / 1.2e-6 / 1.1e-6 with ±2). The input and output transforms are applied in float32 (float64 for float64 inputs)
whatever the input dtype; only the matmul takes bfloat16 operands, accumulating in float32.

Gradients (jaxsr.models.conv_impls.conv3x3's `jax.custom_vjp`): the input gradient is the forward conv
of another problem (conv_impls' docstring); the weight gradient follows the forward formula backwards. With
M = U ⊙ V per tile, U = G g G^T, V = B^T d B, Y = A^T M A:

    dM = A dY A^T per tile,   dU = Σ_tiles V ⊙ dM   ([alpha², cin, tiles] @ [alpha², tiles, cout]),
    dg = G^T dU G.
"""

from __future__ import annotations

import fractions
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

INFINITY = "inf"
# interpolation points per output tile size m (alpha = m + 2 points, one of them ∞)
POINTS: dict[int, tuple] = {2: (0, 1, -1, INFINITY),
                            4: (0, 1, -1, fractions.Fraction(1, 2), fractions.Fraction(-1, 2), INFINITY)}
LAVIN_GRAY_POINTS_4 = (0, 1, -1, 2, -2, INFINITY)
IMPLS = {"winograd2": 2, "winograd4": 4}
DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def _solve(rows: list[list[fractions.Fraction]], rhs: list[fractions.Fraction]) -> list[fractions.Fraction]:
    """The exact solution of a consistent (possibly overdetermined) rational system, by Gaussian elimination."""
    a = [list(r) + [b] for r, b in zip(rows, rhs)]
    n = len(rows[0])
    pivots = []
    row = 0
    for col in range(n):
        pivot = next((i for i in range(row, len(a)) if a[i][col] != 0), None)
        if pivot is None:
            continue
        a[row], a[pivot] = a[pivot], a[row]
        a[row] = [v / a[row][col] for v in a[row]]
        for i in range(len(a)):
            if i != row and a[i][col] != 0:
                a[i] = [v - a[i][col] * p for v, p in zip(a[i], a[row])]
        pivots.append(col)
        row += 1
    if len(pivots) != n or any(r[-1] != 0 for r in a[row:]):
        raise ValueError("the Toom-Cook system has no unique solution: the points must be distinct")
    return [a[i][-1] for i in range(n)]


@functools.lru_cache(maxsize=None)
def transforms(m: int, points: tuple | None = None, r: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B^T, G, A^T) of F(m, r) for `points` (alpha = m + r - 1 of them, the last ∞), as float64 arrays.

    A^T[i, j] = p_j^i and G[j, k] = p_j^k / Π_{l≠j}(p_j - p_l) for the finite points (Lavin & Gray keep
    the fractions in G, which is transformed once per step, so B^T, applied to every tile, is integer
    for integer points); ∞ contributes the last column of A^T and row of G, (0, ..., 0, 1). B^T is then
    the unique matrix for which A^T diag(G e_k) B^T is the correlation's k-th shift for every tap k.
    """
    points = POINTS[m] if points is None else points
    alpha = m + r - 1
    if len(points) != alpha or points[-1] != INFINITY:
        raise ValueError(f"F({m}, {r}) needs {alpha} points, the last {INFINITY!r}")
    finite = [fractions.Fraction(p) for p in points[:-1]]
    one, zero = fractions.Fraction(1), fractions.Fraction(0)

    def scale(j):
        f = one
        for l, q in enumerate(finite):
            if l != j:
                f *= finite[j] - q
        return f

    at = [[finite[j] ** i for j in range(alpha - 1)] + [one if i == m - 1 else zero] for i in range(m)]
    g = [[finite[j] ** k / scale(j) for k in range(r)] for j in range(alpha - 1)] + [[one if k == r - 1 else zero for k in range(r)]]
    system = [[at[i][j] * g[j][k] for j in range(alpha)] for i in range(m) for k in range(r)]
    bt_columns = [_solve(system, [one if c == i + k else zero for i in range(m) for k in range(r)]) for c in range(alpha)]
    bt = [[bt_columns[c][j] for c in range(alpha)] for j in range(alpha)]
    return tuple(np.array([[float(v) for v in row] for row in mat]) for mat in (bt, g, at))


def _combine(mat: np.ndarray, parts: Sequence[jax.Array]) -> list[jax.Array]:
    """[Σ_i mat[a, i] · parts[i] for each row a], unrolled over the nonzero constants.

    XLA fuses these sums into one elementwise loop; an einsum with the constant matrix would lower
    to a dot with a contraction of 4-6, a separate memory-bound pass per transform.
    """
    out = []
    for row in mat:
        acc = None
        for c, p in zip(row, parts):
            if c == 0:
                continue
            term = p if c == 1 else -p if c == -1 else p * jnp.asarray(c, p.dtype)
            acc = term if acc is None else acc + term
        out.append(acc)
    return out


def _transform_dtype(dtype) -> jnp.dtype:
    return jnp.float64 if dtype == jnp.float64 else jnp.float32


def _input_transform(x: jax.Array, m: int, bt: np.ndarray) -> tuple[jax.Array, tuple[int, int, int]]:
    """V = B^T d B of every tile of the zero-padded image, as [alpha², tiles, cin]; and (N, tiles_h, tiles_w)."""
    n, h, w, c = x.shape
    alpha = bt.shape[0]
    th, tw = -(-h // m), -(-w // m)
    # 'same' padding of 1, plus zeros up to whole tiles at the bottom and right (their outputs are cropped), plus
    # one more block of m so that rows and columns reshape into blocks of m: tile t reads block t and the first
    # two pixels of block t + 1, plain slices (XLA:CPU ran strided slices 2-3x slower, measured at 32 ch, 128²).
    xp = jnp.pad(x.astype(_transform_dtype(x.dtype)), ((0, 0), (1, (th + 1) * m - h - 1), (1, (tw + 1) * m - w - 1), (0, 0)))
    xb = xp.reshape(n, th + 1, m, (tw + 1) * m, c)
    rows = jnp.stack(_combine(bt, [xb[:, :th, i] if i < m else xb[:, 1:, i - m] for i in range(alpha)]))
    rb = rows.reshape(alpha, n, th, tw + 1, m, c)
    v = jnp.stack(_combine(bt, [rb[:, :, :, :tw, j] if j < m else rb[:, :, :, 1:, j - m] for j in range(alpha)]), axis=1)
    return v.reshape(alpha * alpha, n * th * tw, c), (n, th, tw)


def _output_transform(mt: jax.Array, tiles: tuple[int, int, int], at: np.ndarray, h: int, w: int) -> jax.Array:
    """Y = A^T M A per tile, from M as [alpha², tiles, cout], cropped to (N, h, w, cout)."""
    m, alpha = at.shape
    n, th, tw = tiles
    mt = mt.reshape(alpha, alpha, n, th, tw, mt.shape[-1])
    rows = _combine(at, [mt[i] for i in range(alpha)])  # m x (alpha, N, th, tw, C) over the column index
    y = jnp.stack([jnp.stack(_combine(at, [r[j] for j in range(alpha)])) for r in rows])  # (m, m, N, th, tw, C)
    y = y.transpose(2, 3, 0, 4, 1, 5).reshape(n, th * m, tw * m, -1)
    return y[:, :h, :w]


def _kernel_transform(wt: jax.Array, g: np.ndarray) -> jax.Array:
    """U = G g G^T for every (cin, cout), as [alpha², cin, cout]."""
    alpha = g.shape[0]
    dtype = _transform_dtype(wt.dtype)
    # as a jax array of the working dtype: jnp.einsum given the numpy float64 constant after one trace with
    # x64 off kept it float32 under jax.enable_x64 too (float64 results with float32 errors, seen in the tests)
    g = jnp.asarray(g, dtype)
    u = jnp.einsum("ai,bj,ijco->abco", g, g, wt.astype(dtype))
    return u.reshape(alpha * alpha, *wt.shape[2:])


def _matmul(a: jax.Array, b: jax.Array, dtype, contract: tuple[int, int]) -> jax.Array:
    """Batched over the first axis; operands in `dtype` (bfloat16 stays bfloat16), accumulated in float32 or wider."""
    acc = _transform_dtype(a.dtype)
    return lax.dot_general(a.astype(dtype), b.astype(dtype), (((contract[0],), (contract[1],)), ((0,), (0,))),
                           preferred_element_type=acc)


def winograd_conv(x: jax.Array, wt: jax.Array, mats: tuple[np.ndarray, np.ndarray, np.ndarray]) -> jax.Array:
    """The 'same' conv by the Winograd algorithm with transform matrices `mats` = (B^T, G, A^T) of `transforms`."""
    bt, g, at = mats
    m = at.shape[0]
    v, tiles = _input_transform(x, m, bt)
    mt = _matmul(v, _kernel_transform(wt, g), x.dtype, (2, 1))
    return _output_transform(mt, tiles, at, x.shape[1], x.shape[2]).astype(x.dtype)


def winograd_weight_gradient(x: jax.Array, dy: jax.Array, mats: tuple[np.ndarray, np.ndarray, np.ndarray]) -> jax.Array:
    """dL/dw of winograd_conv(x, w) for the output gradient dy: the algorithm run backwards (module docstring)."""
    bt, g, at = mats
    m = at.shape[0]
    v, tiles = _input_transform(x, m, bt)
    n, th, tw = tiles
    cout = dy.shape[-1]
    dyp = jnp.pad(dy.astype(_transform_dtype(dy.dtype)), ((0, 0), (0, th * m - dy.shape[1]), (0, tw * m - dy.shape[2]), (0, 0)))
    dyt = dyp.reshape(n, th, m, tw, m, cout)
    # dM = A dY A^T: the output transform's transpose, the A^T columns as rows
    rows = _combine(at.T, [dyt[:, :, i] for i in range(m)])  # alpha x (N, th, tw, m, C)
    dm = jnp.stack([part for r in rows for part in _combine(at.T, [r[:, :, :, j] for j in range(m)])])
    du = _matmul(v, dm.reshape(-1, n * th * tw, cout), x.dtype, (1, 1))  # [alpha², cin, cout]
    alpha = g.shape[0]
    g = jnp.asarray(g, du.dtype)  # see _kernel_transform
    return jnp.einsum("ai,bj,abco->ijco", g, g, du.reshape(alpha, alpha, *du.shape[1:])).astype(x.dtype)


def lax_conv(x: jax.Array, w: jax.Array) -> jax.Array:
    """The reference: XLA's own 3x3 'same' stride-1 convolution, NHWC / HWIO."""
    return lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=DIMENSION_NUMBERS)


def transposed_kernel(w: jax.Array) -> jax.Array:
    """The kernel whose 'same' conv is the input gradient: flipped in space, in/out channels swapped."""
    return w[::-1, ::-1].transpose(0, 1, 3, 2)
