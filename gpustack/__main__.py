"""`python -m gpustack` is the same as the `gpustack` command."""

import sys

from gpustack.cli import main

sys.exit(main())
