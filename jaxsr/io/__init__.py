"""NIfTI input/output that keeps geometry exact, and archive helpers."""
