"""``python -m bench.matrix``: the command line of bench.analysis.matrix."""
import sys

from bench.analysis.matrix import main

if __name__ == "__main__":
    sys.exit(main())
