"""A convolution larger than a worker's memory: a Zarr volume through convmm on Dask.

The run itself is ``convmm._bench.larger_than_memory`` (``python -m convmm bench
--larger-than-memory`` runs it with the default sizes); this script takes its options:

    python tools/larger_than_memory.py                      # 2 GiB, workers of 1 GiB
    python tools/larger_than_memory.py --shape 128 128 64 --chunk 32 32 32
    python tools/larger_than_memory.py --help
"""

import sys

from convmm._bench.larger_than_memory import main

if __name__ == "__main__":
    sys.exit(main())
