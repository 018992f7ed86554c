"""Data: readers (ACDC, folders), preprocessing, the phantom and training batches."""
