"""Pure attribution kernels over numpy arrays (numba-compiled). No I/O here."""
