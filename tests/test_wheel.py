"""A plain (non-editable) install works outside the checkout: the wheel holds the named configs
and `python -m jaxsr demo --quick` runs from a temporary folder on the installed copy.

Built offline from the venv's setuptools (`--no-build-isolation --no-index`, the test extra
requires it); installed without dependencies into a folder put on PYTHONPATH, so the
venv supplies jax, flax, ... and the installed copy, not the checkout, supplies jaxsr.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

from jaxsr.config import load_config

REPO = pathlib.Path(__file__).resolve().parents[1]
# What pyproject.toml's build reads; copied so the build writes nothing into the checkout.
BUILD_INPUTS = ("pyproject.toml", "README.md", "jaxsr", "configs")

RUN_DEMO = """
import runpy, sys
import jaxsr, jaxsr.configs
print("JAXSR", jaxsr.__file__, jaxsr.configs.__file__, flush=True)
sys.argv = ["jaxsr", "demo", "--quick", "--out", sys.argv[1]]
try:
    runpy.run_module("jaxsr", run_name="__main__")
except SystemExit as e:
    code = e.code
print("MODULES", *sorted({m.__file__ for n, m in list(sys.modules.items()) if n.split(".")[0] == "jaxsr"}), flush=True)
sys.exit(code)
"""


def _pip(*args, cwd):
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet", *args], cwd=cwd, check=True)


@pytest.mark.slow  # builds and installs the wheel, then runs the quick demo from it: end to end
def test_wheel_holds_the_configs_and_runs_the_quick_demo_outside_the_checkout(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if (REPO / name).is_dir() else {}))
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path / "dist"), str(src), cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("jaxsr-*.whl")

    names = set(zipfile.ZipFile(wheel).namelist())
    # Every module of the checkout is in the wheel (pyproject lists packages by hand), the configs as jaxsr.configs.
    want = {p.relative_to(REPO).as_posix() for p in (REPO / "jaxsr").rglob("*.py")}
    want |= {p.relative_to(REPO).as_posix() for p in (REPO / "jaxsr").rglob("*.cc")}  # native_conv compiles it on first use
    want |= {f"jaxsr/configs/{p.name}" for p in (REPO / "configs").glob("*.py")}
    assert "jaxsr/configs/default.py" in want and "jaxsr/configs/tiny.py" in want
    assert sorted(want - names) == []

    site = tmp_path / "site"
    _pip("install", "--no-deps", "--no-index", "--target", str(site), str(wheel), cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    out = elsewhere / "demo"
    proc = subprocess.run([sys.executable, "-c", RUN_DEMO, str(out)], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {line.split(" ", 1)[0]: line.split(" ")[1:] for line in proc.stdout.splitlines() if line.startswith(("JAXSR", "MODULES"))}
    installed = [pathlib.Path(f) for f in lines["JAXSR"] + lines["MODULES"]]
    assert len(installed) > 10 and all(f.is_relative_to(site / "jaxsr") for f in installed), installed

    # The quick demo trains the `tiny` config, found by name in the installed package.
    assert json.loads((out / "train" / "config.json").read_text())["model"] == load_config("tiny").model.to_dict()
    for path in ("phantom/phantom.json", "report/index.html", "report/summary.json", "report/scores.csv", "timings.json"):
        assert (out / path).is_file(), path
    assert list((out / "upsampled").glob("*_x2.nii.gz"))
