"""Pixels of the synthetic cine phantom: vectorised numpy, one slice slab at a time.

A slab is rendered at sub-slice positions `z_step_mm` apart through its
thickness and averaged (partial volume); every structure has an anti-aliased
edge one pixel wide (in-plane partial volume). The heart is painted over a
static thorax (breath-hold cine: only the heart moves), inside a box around the
heart so the per-frame work stays small.

Signal levels are those of a balanced-SSFP cine: blood 1, myocardium 0.25, fat
0.8, liver 0.38, lungs and air near 0. `acquire` then applies the coil bias
field, scales to int16 and adds Rician noise.
"""

from __future__ import annotations

import numpy as np

from jaxsr.data.phantom_anatomy import Heart, Patient, Scene, contraction

BLOOD = 1.0
MYO = 0.25
FAT = 0.8
LIVER = 0.38
LUNG = 0.03
MUSCLE = 0.22
MEDIASTINUM = 0.35
VESSEL = 0.45


def _inside(distance: np.ndarray, edge: float) -> np.ndarray:
    """Soft indicator of `distance <= 0` with a one-pixel linear edge."""
    out = distance * np.float32(-1.0 / edge)  # a fresh array: the rest works in place
    out += np.float32(0.5)
    return np.clip(out, 0.0, 1.0, out=out)


def _paint(image: np.ndarray, mask: np.ndarray, value: float) -> None:
    delta = np.float32(value) - image
    delta *= mask
    image += delta


def scene_grid(patient: Patient) -> tuple[np.ndarray, np.ndarray]:
    """Scene coordinates (mm) of every pixel: x towards the patient's left, y anterior."""
    nx, ny = patient.matrix
    px = patient.pixel_mm
    u = ((np.arange(nx) - (nx - 1) / 2) * px).astype(np.float32)[:, None]
    v = ((np.arange(ny) - (ny - 1) / 2) * px).astype(np.float32)[None, :]
    c, s = np.cos(patient.scene.rotation), np.sin(patient.scene.rotation)
    return (c * u - s * v).astype(np.float32), (s * u + c * v).astype(np.float32)


def slab_offsets(thickness_mm: float, z_step_mm: float) -> np.ndarray:
    """Sub-slice positions (mm from the slab centre) whose mean is the slab profile."""
    count = max(1, int(np.ceil(thickness_mm / z_step_mm - 1e-6)))
    return (np.arange(count) + 0.5) * (thickness_mm / count) - thickness_mm / 2


def render_clean(
    patient: Patient,
    positions: np.ndarray | None = None,
    *,
    thickness_mm: float | None = None,
    z_step_mm: float = 1.0,
    frames: np.ndarray | None = None,
) -> np.ndarray:
    """Noise-free, bias-free signal (x, y, z, t) float32 at slice `positions`.

    `positions` are in slice-index units (fractional allowed: 0.5 is half way
    between slices 0 and 1); default: the acquired slices. `frames` are frame
    indices (default all).
    """
    positions = np.arange(patient.n_slices, dtype=np.float64) if positions is None else np.asarray(positions, np.float64)
    frames = np.arange(patient.n_frames) if frames is None else np.asarray(frames)
    thickness = patient.slice_thickness_mm if thickness_mm is None else thickness_mm
    offsets = slab_offsets(thickness, z_step_mm)
    c = contraction(frames / patient.n_frames, patient.heart.es_phase)
    x, y = scene_grid(patient)
    out = np.empty((patient.matrix[0], patient.matrix[1], len(positions), len(frames)), np.float32)
    w_mid = (patient.n_slices - 1) * patient.slice_spacing_mm / 2
    for k, position in enumerate(positions):
        w = position * patient.slice_spacing_mm + offsets
        static = _thorax(patient.scene, x, y, w, w_mid, patient.heart, patient.pixel_mm)  # (J, X, Y)
        slab = np.broadcast_to(static, (len(frames),) + static.shape).copy()  # (T, J, X, Y)
        _paint_heart(slab, patient.heart, x, y, w, c, w_mid, patient.pixel_mm)
        out[:, :, k, :] = slab.mean(axis=1).transpose(1, 2, 0)
    return out


def bias_field(patient: Patient) -> np.ndarray:
    """Smooth multiplicative coil sensitivity (x, y), brightest near the anterior coil."""
    x, y = scene_grid(patient)
    bx, by, bq, coil = patient.scene.bias
    bcx, bcy = patient.scene.body_centre
    front = bcy + patient.scene.body_axes[1]
    field = np.exp(bx * x / 100 + by * y / 100 + bq * (x**2 + y**2) / 100**2)
    field = field * (1 + coil * np.exp(-np.maximum(front - y, 0.0) / 60.0))
    return (field / field.mean()).astype(np.float32)


def acquire(patient: Patient, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bias, int16 scaling and Rician noise: what the scanner stores."""
    signal = clean * (bias_field(patient)[:, :, None, None] * np.float32(patient.blood_level))
    sigma = MYO * patient.blood_level / patient.snr
    real = signal + rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    imag = rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    magnitude = np.sqrt(real * real + imag * imag)
    return np.clip(np.rint(magnitude), 0, np.iinfo(np.int16).max).astype(np.int16)


def _thorax(scene: Scene, x: np.ndarray, y: np.ndarray, w: np.ndarray, w_mid: float, heart: Heart, edge: float) -> np.ndarray:
    """Static surroundings at sub-slice positions `w` (J,): body wall, lungs, liver, aorta."""
    wj = w[:, None, None].astype(np.float32)
    bx, by = scene.body_centre
    ax, ay = scene.body_axes
    body_r = np.sqrt(((x - bx) / ax) ** 2 + ((y - by) / ay) ** 2) * np.sqrt(ax * ay)
    body_d = body_r - np.sqrt(ax * ay)  # mm, < 0 inside the body
    image = np.zeros(np.broadcast_shapes(wj.shape, x.shape, y.shape), np.float32)
    _paint(image, _inside(body_d, edge), FAT)
    _paint(image, _inside(body_d + 11.0, edge), MUSCLE)
    _paint(image, _inside(body_d + 22.0, edge), MEDIASTINUM)
    # Lungs shrink and the liver rises towards the apex (the diaphragm).
    depth = np.clip((wj - w_mid) / 60.0, -1.0, 1.0)
    for cx, cy, lx, ly in (scene.lung_left, scene.lung_right):
        shrink = 1.0 - 0.35 * np.clip(depth, 0.0, 1.0)
        r = np.sqrt(((x - cx) / (lx * shrink)) ** 2 + ((y - cy - 10 * depth) / (ly * shrink)) ** 2)
        _paint(image, _inside((r - 1.0) * lx * shrink, edge), LUNG)
    lvx, lvy, lr = scene.liver
    liver_r = lr * np.sqrt(np.clip((wj - heart.w_apex + 45.0) / 40.0, 0.0, 1.0))
    _paint(image, _inside(np.sqrt((x - lvx) ** 2 + (y - lvy) ** 2) - liver_r, edge), LIVER)
    dx_, dy_, dr = scene.desc_aorta
    _paint(image, _inside(np.sqrt((x - dx_) ** 2 + (y - dy_) ** 2) - dr - 1.5, edge), MYO)
    _paint(image, _inside(np.sqrt((x - dx_) ** 2 + (y - dy_) ** 2) - dr, edge), 0.95)
    # Lung vessels and a gentle tissue texture, evaluated at the slab centre (static detail).
    w0 = float(np.mean(w))
    detail = np.zeros(np.broadcast_shapes(x.shape, y.shape), np.float32)
    lung_mask = np.zeros_like(detail)
    for (cx, cy, lx, ly), vessels in zip((scene.lung_left, scene.lung_right), np.split(scene.vessels, 2)):
        for vx, vy, vr, drift in vessels:
            px_ = cx + 0.7 * vx * lx + drift * (w0 - w_mid)
            py_ = cy + 0.7 * vy * ly
            lung_mask = np.maximum(lung_mask, _inside(np.sqrt((x - px_) ** 2 + (y - py_) ** 2) - vr, edge))
    lungish = (image < 0.1).astype(np.float32)  # vessels only show inside the dark lung
    image += (VESSEL - image) * (lung_mask * lungish)
    for kx, ky, kw, phase, amp in scene.texture:
        detail += amp * np.cos(kx * x + ky * y + kw * w0 + phase)
    return image * (1.0 + detail)


def _ellipse_radius(dx, dy, angle, ellipticity):
    """Elliptic 'radius' in mm: equal to the radius for a circle of the same mean size."""
    ca, sa = np.cos(angle), np.sin(angle)
    along = ca * dx + sa * dy
    across = -sa * dx + ca * dy
    return np.sqrt((along / (1 + ellipticity)) ** 2 + (across / (1 - ellipticity)) ** 2)


def _profile(s: np.ndarray, a: float, b: float) -> np.ndarray:
    """Truncated-ellipsoid radius profile: 1 at the base, 0 at s = 1, steep near 0."""
    return (1.0 - np.clip(s, 0.0, 1.0) ** a) ** (1.0 / b)


def _paint_heart(slab, h: Heart, x, y, w, c, w_mid, edge) -> None:
    """Paints the heart for every frame (c: contraction per frame) into slab (T, J, X, Y)."""
    c = c[:, None].astype(np.float64)  # (T, 1)
    w = w[None, :]  # (1, J)
    length = h.length_mm * (1.0 - h.shortening * c)
    sl = w - (h.w_apex - length)  # mm below the AV plane
    s = sl / length
    sc = np.clip(s, 0.0, 1.0)
    twist = c * (h.twist_apex * sc - h.twist_base * (1 - sc))
    narrow = 1.0 - 0.08 * np.clip(1.0 - sc / 0.3, 0.0, 1.0) ** 2
    cap_ed = 1.0 - h.apex_cap_mm / h.length_mm
    cap = 1.0 - h.apex_cap_mm * (1 + 0.3 * c) / length
    r_endo_ed = h.r_endo_mm * _profile(s / cap_ed, h.profile_a, h.profile_b) * narrow
    r_epi_ed = (h.r_endo_mm + h.wall_mm) * _profile(s, h.profile_a, h.profile_b) * narrow
    r_endo = (1.0 - (1.0 - h.radial_es) * c) * h.r_endo_mm * _profile(s / cap, h.profile_a, h.profile_b) * narrow
    # Myocardium is incompressible: the wall thickens as the cavity shrinks.
    r_epi = np.sqrt(r_endo**2 + np.maximum(r_epi_ed**2 - r_endo_ed**2, 0.0))
    gate_v = np.clip(sl / 2.0 + 0.5, 0.0, 1.0)  # ventricle below the AV plane
    dw = w - w_mid
    cx = h.centre[0] + h.tilt[0] * dw + h.bend[0] * (dw / 50.0) ** 2 + h.es_shift[0] * c
    cy = h.centre[1] + h.tilt[1] * dw + h.bend[1] * (dw / 50.0) ** 2 + h.es_shift[1] * c

    r_base = h.r_endo_mm + h.wall_mm
    rv_scale = np.sqrt(1.0 - np.clip(s / h.rv_length, 0.0, 1.0) ** 2.2) * np.where(s < 0, 0.85, 1.0)
    rv_size = 1.0 - (1.0 - h.rv_es) * c
    rv_angle = h.rv_angle + 0.3 * sc + 0.5 * twist
    rv_dist = h.rv_offset * r_epi
    rv_cx = cx + rv_dist * np.cos(rv_angle)
    rv_cy = cy + rv_dist * np.sin(rv_angle)
    rv_a = h.rv_along * r_base * rv_scale * rv_size
    rv_b = h.rv_across * r_base * rv_scale * (0.5 + 0.5 * rv_size)
    fat = h.fat_mm + 5.0 * np.exp(-((sl / 6.0) ** 2))  # thick in the AV groove
    gate_fat = np.clip((sl + 8.0) / 3.0, 0.0, 1.0)

    def col(a):  # (T, J) parameters against (X, Y) pixels
        return np.asarray(np.broadcast_to(a, slab.shape[:2]), np.float32)[:, :, None, None]

    # Work inside the box that can hold the heart in this slab.
    reach = float(np.max(rv_dist + rv_a + h.rv_wall_mm + fat)) + 8.0
    reach = max(reach, float(np.max(r_epi + fat)) + 8.0, h.la_radius_mm * 1.2 + 20.0)
    box = _box(x, y, cx, cy, reach)
    if box is None:
        return
    bx, by = box
    xs, ys = x[bx, by], y[bx, by]
    region = slab[:, :, bx, by]

    dx, dy = xs - col(cx), ys - col(cy)
    rho = _ellipse_radius(dx, dy, col(h.ellipse_angle + 0.6 * sc + twist), col(h.ellipticity * (1 - 0.5 * sc)))
    rv_present = float(np.max(rv_a)) > 0.5
    if rv_present:
        rdx, rdy = xs - col(rv_cx), ys - col(rv_cy)
        ca, sa = np.cos(col(rv_angle)), np.sin(col(rv_angle))
        along, across = ca * rdx + sa * rdy, -sa * rdx + ca * rdy
        a_, b_ = col(rv_a), col(rv_b)

        # Approximate signed distance to the RV ellipse, computed once; walls and
        # fat are offsets of it.
        mean_axis = np.sqrt(a_ * b_) + np.float32(1e-3)
        rv_distance = (np.sqrt((along / (a_ + 1e-3)) ** 2 + (across / (b_ + 1e-3)) ** 2) - 1.0) * mean_axis
        rv_distance[np.broadcast_to(a_ <= 0.5, rv_distance.shape)] = np.inf

        def rv_inside(grow):
            return _inside(rv_distance - grow, edge)

    # Epicardial fat, then myocardium, then blood pools.
    fat_mask = _inside(rho - col(r_epi + fat), edge) * col(gate_fat * (r_epi > 0.5))
    if rv_present:
        fat_mask = np.maximum(fat_mask, rv_inside(col(h.rv_wall_mm + fat)) * col(gate_fat))
    _paint(region, fat_mask, FAT)
    lv_epi = _inside(rho - col(r_epi), edge) * col(gate_v)
    myo = lv_epi
    if rv_present:
        myo = np.maximum(myo, rv_inside(h.rv_wall_mm))
    _paint(region, myo, MYO)
    if rv_present:
        _paint(region, rv_inside(0.0) * (1.0 - lv_epi), BLOOD)
    _paint(region, _inside(rho - col(r_endo), edge) * col(gate_v), BLOOD)
    _paint_lv_interior(region, h, xs, ys, cx, cy, r_endo, sc, c, twist, gate_v, edge, col)
    _paint_base(region, h, xs, ys, cx, cy, sl, c, twist, edge, col)
    slab[:, :, bx, by] = region


def _box(x, y, cx, cy, reach):
    """Index slices of the pixels within `reach` mm (scene box) of any of the centres."""
    near = (
        (x >= float(np.min(cx)) - reach)
        & (x <= float(np.max(cx)) + reach)
        & (y >= float(np.min(cy)) - reach)
        & (y <= float(np.max(cy)) + reach)
    )
    rows, cols = np.nonzero(near.any(axis=1))[0], np.nonzero(near.any(axis=0))[0]
    if len(rows) == 0 or len(cols) == 0:
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _paint_lv_interior(region, h: Heart, xs, ys, cx, cy, r_endo, sc, c, twist, gate_v, edge, col) -> None:
    """Papillary muscles and trabeculae: dark blobs attached to the moving endocardium."""
    blobs = []  # (angle, radius of the blob) per structure, each (T, J)
    for angle in h.pap_angles:
        size = h.pap_radius_mm * np.exp(-(((sc - h.pap_centre_s) / h.pap_width_s) ** 2)) * (1 + 0.25 * c)
        blobs.append((angle + twist, size * (sc > 0.12)))
    for angle, drift, centre, width, radius in zip(h.trab_angle, h.trab_drift, h.trab_centre_s, h.trab_width_s, h.trab_radius_mm):
        size = radius * np.exp(-(((sc - centre) / width) ** 2)) * (1 + 0.2 * c)
        blobs.append((angle + drift * sc + twist, size))
    # Blobs sit inside the endocardium: work in the box around the cavity only.
    box = _box(xs, ys, cx, cy, float(np.max(r_endo)) + 2.0)
    if box is None:
        return
    bx, by = box
    xs, ys = xs[bx, by], ys[bx, by]
    mask = None
    for angle, size in blobs:
        size = np.minimum(size, 0.45 * r_endo)
        if float(np.max(size)) < 0.4:
            continue
        dist = np.maximum(r_endo - 0.55 * size, 0.0)
        bx_ = cx + dist * np.cos(angle)
        by_ = cy + dist * np.sin(angle)
        m = _inside(np.sqrt((xs - col(bx_)) ** 2 + (ys - col(by_)) ** 2) - col(size), edge)
        mask = m if mask is None else np.maximum(mask, m)
    if mask is not None:
        sub = region[:, :, bx, by]
        _paint(sub, mask * col(gate_v), MYO)
        region[:, :, bx, by] = sub


def _paint_base(region, h: Heart, xs, ys, cx, cy, sl, c, twist, edge, col) -> None:
    """Left atrium above the AV plane, and the aortic root / LV outflow tract."""
    gate_la = np.clip(0.5 - (sl - 1.0) / 2.0, 0.0, 1.0)
    if float(np.max(gate_la)) > 0:
        r_la = h.la_radius_mm * (1 + 0.12 * c)
        d = np.sqrt((xs - col(cx + h.la_offset[0])) ** 2 + (ys - col(cy + h.la_offset[1])) ** 2)
        _paint(region, _inside(d - col(r_la + 2.0), edge) * col(gate_la), MYO)
        _paint(region, _inside(d - col(r_la), edge) * col(gate_la), BLOOD)
    gate_ao = np.clip(0.5 - (sl - 14.0) / 2.0, 0.0, 1.0)
    if float(np.max(gate_ao)) > 0:
        angle = h.ao_angle + twist
        dist = 0.85 * h.r_endo_mm
        d = np.sqrt((xs - col(cx + dist * np.cos(angle))) ** 2 + (ys - col(cy + dist * np.sin(angle))) ** 2)
        gate_wall = np.clip(0.5 - sl / 2.0, 0.0, 1.0)
        _paint(region, _inside(d - col(h.ao_radius_mm + 2.0), edge) * col(gate_wall), MYO)
        _paint(region, _inside(d - h.ao_radius_mm, edge) * col(gate_ao), BLOOD)
