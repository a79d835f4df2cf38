"""``python -m benchmarks``: the single-layer benchmark (see :mod:`benchmarks.layers`)."""

import sys

from benchmarks.layers import main

sys.exit(main())
