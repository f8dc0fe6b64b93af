"""`python -m gpustack` is the same as the `gpustack` command."""

import sys

from gpustack.cli import main

# Guarded: the embedded worker's process (multiprocessing, spawn) imports this module as __mp_main__.
if __name__ == "__main__":
    sys.exit(main())
