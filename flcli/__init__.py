"""Operator-side tooling: the local stack, the operator CLI, reports. Imports torch where it must."""

import os

# numpy's OpenBLAS on one thread in the operator's processes and the local stack they start: on a
# machine that trains, a second BLAS thread takes a core from training and spins while it waits
# (scoring the test set took 1.5-3.1 core-seconds instead of 0.8-0.9). Set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
