"""jaxsr: through-plane super-resolution of anisotropic cine MRI by latent interpolation."""

__version__ = "0.1.0"


def version() -> str:
    """The installed distribution's version; `__version__` when run from a bare checkout.

    The one place every output (sidecars, reports, benchmark JSON, `--version`) takes it from.
    """
    import importlib.metadata

    try:
        return importlib.metadata.version("jaxsr")
    except importlib.metadata.PackageNotFoundError:
        return __version__
