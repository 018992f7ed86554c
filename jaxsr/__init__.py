"""jaxsr: through-plane super-resolution of anisotropic cine MRI by latent interpolation."""

__version__ = "0.1.0"
