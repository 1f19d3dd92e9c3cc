"""``python -m bench.crosscheck``: the command line of bench.crosscheck.check."""
import sys

from bench.crosscheck.check import main

if __name__ == "__main__":
    sys.exit(main())
