"""Random anatomy of one synthetic cine patient: the numbers, not the pixels.

A patient is a handful of smooth functions of two variables: `w`, the position
along the slice normal in mm (slice 0 at w = 0, increasing towards the apex),
and `t`, the cardiac phase in [0, 1). The heart is described by its normalised
long-axis coordinate s = (w - w_base(t)) / L(t): s = 0 at the atrioventricular
(AV) plane, s = 1 at the epicardial apex. The apex is fixed in space and the
base descends in systole (long-axis shortening), so a basal slice shows the
left ventricle at end-diastole and the atrium at end-systole, as in real cine.

Everything that changes between slices changes *geometrically* and smoothly but
non-linearly with w (ellipsoidal radius profile, RV crescent that vanishes
before the apex, wall thickening from myocardial volume conservation, twisting
trabeculae), which is what makes linear through-plane interpolation ghost while
leaving the anatomy learnable from in-plane slices.
"""

from __future__ import annotations

import dataclasses

import numpy as np

GROUPS = ("NOR", "DCM", "HCM", "MINF", "RV")
GROUP_WEIGHTS = (0.4, 0.15, 0.15, 0.15, 0.15)


@dataclasses.dataclass(frozen=True)
class PhantomSpec:
    """Ranges the patients are drawn from. Defaults follow ACDC-like cine.

    The in-plane matrix is round(fov / pixel) clipped to `matrix`, so a small
    `fov_mm` gives a small (fast) image with realistic pixels, as the tests do.
    """

    fov_mm: tuple[float, float] = (165.0, 215.0)
    pixel_mm: tuple[float, float] = (1.2, 1.8)
    matrix: tuple[int, int] = (96, 144)
    frames: tuple[int, int] = (20, 30)
    slices: tuple[int, int] = (8, 12)
    # Training patients: slice spacing drawn from this range, half of them at
    # exactly the upper end (10 mm, the common ACDC protocol).
    train_spacing_mm: tuple[float, float] = (6.5, 10.0)
    test_spacing_mm: float = 5.0
    # 5 mm stacks need more slices to cover the same base-to-apex length.
    test_slices: tuple[int, int] = (14, 18)
    test_fraction: float = 0.125
    # Partial volume: each slab is rendered at this through-plane step and averaged.
    z_step_mm: float = 1.0
    snr: tuple[float, float] = (15.0, 25.0)
    # Stored int16 value of blood at the centre of the coil sensitivity.
    blood_level: tuple[float, float] = (650.0, 900.0)


@dataclasses.dataclass(frozen=True)
class Heart:
    """Shape and motion parameters of one heart (mm, radians)."""

    length_mm: float  # base to epicardial apex at end-diastole
    w_apex: float  # epicardial apex position along the slice normal (fixed)
    shortening: float  # long-axis shortening at end-systole (fraction of length)
    r_endo_mm: float  # basal LV endocardial radius at end-diastole
    wall_mm: float  # LV wall thickness at end-diastole
    radial_es: float  # endocardial radius at ES / at ED
    apex_cap_mm: float  # epicardial apex minus endocardial apex
    profile_a: float  # radius profile (1 - s^a)^(1/b)
    profile_b: float
    ellipticity: float
    ellipse_angle: float
    centre: tuple[float, float]  # LV centre in the scene frame at the stack middle
    tilt: tuple[float, float]  # in-plane drift of the LV centre per mm of w
    bend: tuple[float, float]  # quadratic drift (mm at +-50 mm from the middle)
    es_shift: tuple[float, float]  # LV centre displacement at ES
    twist_apex: float  # systolic rotation of the apex (rad), base turns the other way
    twist_base: float
    rv_angle: float  # direction from LV centre to RV centre
    rv_length: float  # RV extent as a fraction of s
    rv_along: float  # RV ellipse semi-axes relative to the basal LV epicardial radius
    rv_across: float
    rv_offset: float  # RV centre distance relative to the local LV epicardial radius
    rv_es: float  # RV size at ES / at ED
    rv_wall_mm: float
    la_radius_mm: float
    la_offset: tuple[float, float]
    ao_radius_mm: float
    ao_angle: float
    pap_angles: tuple[float, float]
    pap_radius_mm: float
    pap_centre_s: float
    pap_width_s: float
    trab_angle: np.ndarray  # (K,)
    trab_drift: np.ndarray  # angular drift over s (rad)
    trab_centre_s: np.ndarray
    trab_width_s: np.ndarray
    trab_radius_mm: np.ndarray
    fat_mm: float
    es_phase: float  # phase of end-systole in [0, 1)


@dataclasses.dataclass(frozen=True)
class Scene:
    """Static surroundings and acquisition of one patient."""

    rotation: float  # in-plane rotation of the whole scene (rad)
    body_centre: tuple[float, float]
    body_axes: tuple[float, float]
    lung_left: tuple[float, float, float, float]  # cx, cy, ax, ay
    lung_right: tuple[float, float, float, float]
    liver: tuple[float, float, float]  # cx, cy, radius at the apex level
    desc_aorta: tuple[float, float, float]
    vessels: np.ndarray  # (V, 4) lung vessels: x, y, radius, drift per mm of w
    texture: np.ndarray  # (M, 5) cosine texture: kx, ky, kw, phase, amplitude
    bias: tuple[float, float, float, float]  # linear x, y, quadratic, anterior coil gain


@dataclasses.dataclass(frozen=True)
class Patient:
    number: int
    name: str
    is_test: bool
    group: str
    height_cm: float
    weight_kg: float
    n_slices: int
    slice_spacing_mm: float
    slice_thickness_mm: float
    pixel_mm: float
    matrix: tuple[int, int]
    n_frames: int
    rr_s: float
    snr: float
    blood_level: float
    heart: Heart
    scene: Scene
    affine: np.ndarray

    @property
    def frame_duration_s(self) -> float:
        return self.rr_s / self.n_frames

    @property
    def phases(self) -> np.ndarray:
        return np.arange(self.n_frames) / self.n_frames

    @property
    def ed_frame(self) -> int:
        """1-based, as in ACDC's Info.cfg."""
        return 1

    @property
    def es_frame(self) -> int:
        return int(np.argmax(contraction(self.phases, self.heart.es_phase))) + 1


def contraction(phase: np.ndarray, es_phase: float) -> np.ndarray:
    """0 at end-diastole, 1 at end-systole; fast early filling, slow diastasis."""
    phase = np.mod(np.asarray(phase, np.float64), 1.0)
    systole = 0.5 * (1.0 - np.cos(np.pi * np.clip(phase / es_phase, 0.0, 1.0)))
    psi = np.clip((phase - es_phase) / (1.0 - es_phase), 0.0, 1.0)
    diastole = 0.5 * (1.0 + np.cos(np.pi * psi**0.6))
    return np.where(phase <= es_phase, systole, diastole)


def _u(rng: np.random.Generator, lo_hi) -> float:
    return float(rng.uniform(*lo_hi))


def sample_patient(rng: np.random.Generator, spec: PhantomSpec, number: int, is_test: bool) -> Patient:
    """Draws one patient; only `rng` decides, so the same stream gives the same patient."""
    group = str(rng.choice(GROUPS, p=GROUP_WEIGHTS))
    pixel = _u(rng, spec.pixel_mm)
    fov = _u(rng, spec.fov_mm)
    nx = int(np.clip(round(fov / pixel), *spec.matrix))
    ny = int(np.clip(round(nx * rng.uniform(0.85, 1.0)), *spec.matrix))
    n_frames = int(rng.integers(spec.frames[0], spec.frames[1] + 1))

    if is_test:
        spacing = float(spec.test_spacing_mm)
        thickness = spacing
        slice_range = spec.test_slices
    else:
        lo, hi = spec.train_spacing_mm
        spacing = hi if rng.random() < 0.5 else round(_u(rng, (lo, hi)), 1)
        thickness = round(min(spacing, _u(rng, (6.0, 8.0))), 1)
        slice_range = spec.slices
    # The stack runs from a little above (or just below) the AV plane to the apex.
    s_first = _u(rng, (-0.10, 0.02))
    s_last = _u(rng, (0.92, 1.04))
    target_length = _u(rng, (78.0, 98.0))
    n_slices = int(np.clip(round(target_length * (s_last - s_first) / spacing) + 1, *slice_range))
    length = (n_slices - 1) * spacing / (s_last - s_first)
    w_base = -s_first * length

    heart = _sample_heart(rng, group, length, w_base + length, n_slices, spacing)
    scene = _sample_scene(rng, n_slices * spacing)
    height = round(_u(rng, (155.0, 192.0)), 1)
    weight = round(float(np.clip(rng.normal(22.0 + 6.0 * (group == "DCM"), 3.5), 17.0, 35.0) * (height / 100) ** 2), 1)
    return Patient(
        number=number,
        name=f"patient{number:03d}",
        is_test=is_test,
        group=group,
        height_cm=height,
        weight_kg=weight,
        n_slices=n_slices,
        slice_spacing_mm=spacing,
        slice_thickness_mm=thickness,
        pixel_mm=pixel,
        matrix=(nx, ny),
        n_frames=n_frames,
        rr_s=_u(rng, (0.7, 1.1)),
        snr=_u(rng, spec.snr),
        blood_level=_u(rng, spec.blood_level),
        heart=heart,
        scene=scene,
        affine=_oblique_affine(rng, pixel, spacing, (nx, ny, n_slices)),
    )


def _sample_heart(rng, group: str, length: float, w_apex: float, n_slices: int, spacing: float) -> Heart:
    r_endo = _u(rng, (21.0, 27.0))
    wall = _u(rng, (7.0, 10.0))
    radial_es = _u(rng, (0.60, 0.70))
    rv_along, rv_es = _u(rng, (0.85, 1.05)), _u(rng, (0.70, 0.82))
    if group == "DCM":
        r_endo *= 1.25
        wall *= 0.8
        radial_es = _u(rng, (0.82, 0.9))
    elif group == "HCM":
        r_endo *= 0.85
        wall *= 1.6
        radial_es = _u(rng, (0.45, 0.58))
    elif group == "MINF":
        wall *= 0.85
        radial_es = _u(rng, (0.75, 0.85))
    elif group == "RV":
        rv_along *= 1.3
        rv_es = _u(rng, (0.85, 0.92))
    k = int(rng.integers(10, 17))
    pap_base = _u(rng, (0.0, np.pi / 2))
    return Heart(
        length_mm=length,
        w_apex=w_apex,
        shortening=_u(rng, (0.10, 0.16)) * (0.6 if group in ("DCM", "MINF") else 1.0),
        r_endo_mm=r_endo,
        wall_mm=wall,
        radial_es=radial_es,
        apex_cap_mm=_u(rng, (6.0, 10.0)),
        profile_a=_u(rng, (1.7, 2.6)),
        profile_b=_u(rng, (1.8, 2.4)),
        ellipticity=_u(rng, (0.0, 0.12)),
        ellipse_angle=_u(rng, (0.0, np.pi)),
        centre=(_u(rng, (-12.0, 12.0)), _u(rng, (-12.0, 12.0))),
        tilt=(_u(rng, (-0.15, 0.15)), _u(rng, (-0.15, 0.15))),
        bend=(_u(rng, (-5.0, 5.0)), _u(rng, (-5.0, 5.0))),
        es_shift=(_u(rng, (-3.0, 3.0)), _u(rng, (-3.0, 3.0))),
        twist_apex=np.deg2rad(_u(rng, (6.0, 14.0))),
        twist_base=np.deg2rad(_u(rng, (2.0, 6.0))),
        rv_angle=np.deg2rad(145.0 + _u(rng, (-15.0, 15.0))),
        rv_length=_u(rng, (0.70, 0.85)),
        rv_along=rv_along,
        rv_across=_u(rng, (1.0, 1.2)) * (1.15 if group == "RV" else 1.0),
        rv_offset=_u(rng, (0.55, 0.7)),
        rv_es=rv_es,
        rv_wall_mm=_u(rng, (2.5, 4.0)),
        la_radius_mm=_u(rng, (17.0, 23.0)),
        la_offset=(_u(rng, (-4.0, 6.0)), _u(rng, (-12.0, -6.0))),
        ao_radius_mm=_u(rng, (10.0, 13.5)),
        ao_angle=np.deg2rad(100.0 + _u(rng, (-12.0, 12.0))),
        pap_angles=(pap_base - 0.9 + _u(rng, (-0.2, 0.2)), pap_base - 2.5 + _u(rng, (-0.2, 0.2))),
        pap_radius_mm=_u(rng, (3.5, 5.5)),
        pap_centre_s=_u(rng, (0.45, 0.6)),
        pap_width_s=_u(rng, (0.18, 0.26)),
        trab_angle=rng.uniform(-np.pi, np.pi, k),
        trab_drift=rng.uniform(-0.8, 0.8, k),
        trab_centre_s=rng.uniform(0.35, 0.9, k),
        trab_width_s=rng.uniform(0.1, 0.22, k),
        trab_radius_mm=rng.uniform(1.3, 2.3, k),
        fat_mm=_u(rng, (1.5, 3.0)),
        es_phase=_u(rng, (0.32, 0.40)),
    )


def _sample_scene(rng, depth_mm: float) -> Scene:
    n_vessels = 24
    vessels = np.stack(
        [
            rng.uniform(-1.0, 1.0, n_vessels),  # positions in lung-normalised coordinates
            rng.uniform(-1.0, 1.0, n_vessels),
            rng.uniform(1.2, 3.0, n_vessels),
            rng.uniform(-0.3, 0.3, n_vessels),
        ],
        axis=1,
    )
    n_tex = 6
    texture = np.stack(
        [
            rng.uniform(-0.08, 0.08, n_tex),
            rng.uniform(-0.08, 0.08, n_tex),
            rng.uniform(-0.02, 0.02, n_tex),
            rng.uniform(0.0, 2 * np.pi, n_tex),
            rng.uniform(0.01, 0.025, n_tex),
        ],
        axis=1,
    )
    return Scene(
        rotation=np.deg2rad(_u(rng, (-25.0, 25.0))),
        body_centre=(_u(rng, (-35.0, -15.0)), _u(rng, (-40.0, -25.0))),
        body_axes=(_u(rng, (150.0, 185.0)), _u(rng, (105.0, 125.0))),
        lung_left=(_u(rng, (62.0, 75.0)), _u(rng, (-15.0, 0.0)), _u(rng, (38.0, 48.0)), _u(rng, (70.0, 85.0))),
        lung_right=(_u(rng, (-95.0, -80.0)), _u(rng, (-15.0, 0.0)), _u(rng, (35.0, 45.0)), _u(rng, (70.0, 85.0))),
        liver=(_u(rng, (-70.0, -45.0)), _u(rng, (-80.0, -60.0)), _u(rng, (45.0, 65.0))),
        desc_aorta=(_u(rng, (20.0, 40.0)), _u(rng, (-75.0, -60.0)), _u(rng, (10.0, 13.0))),
        vessels=vessels,
        texture=texture,
        bias=(_u(rng, (-0.25, 0.25)), _u(rng, (-0.1, 0.25)), _u(rng, (-0.15, 0.0)), _u(rng, (0.1, 0.35))),
    )


def _oblique_affine(rng, pixel: float, spacing: float, shape: tuple[int, int, int]) -> np.ndarray:
    """A double-oblique short-axis plane: rotation times zooms, centred near the origin.

    The slice normal (third column) points roughly along the LV long axis
    (left, anterior, inferior in RAS), as a planned short-axis stack does.
    """
    azimuth = np.deg2rad(_u(rng, (20.0, 70.0)))
    elevation = np.deg2rad(_u(rng, (-50.0, -20.0)))
    normal = np.array([-np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
    # Any vector not parallel to the normal gives the in-plane axes; then spin them.
    helper = np.array([0.0, 0.0, 1.0])
    e1 = np.cross(helper, normal)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(normal, e1)
    spin = _u(rng, (0.0, 2 * np.pi))
    u = np.cos(spin) * e1 + np.sin(spin) * e2
    v = np.cross(normal, u)
    rotation = np.stack([u, v, normal], axis=1)  # columns: direction cosines, det +1
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.array([pixel, pixel, spacing])
    centre_index = (np.array(shape, np.float64) - 1) / 2
    centre_world = rng.uniform(-20.0, 20.0, 3)
    affine[:3, 3] = centre_world - affine[:3, :3] @ centre_index
    return affine
