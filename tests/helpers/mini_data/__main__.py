"""python -m tests.helpers.mini_data ROOT: write every miniature dataset under ROOT (for the CPU smoke run)."""

import sys

from . import make_mini_data

if __name__ == "__main__":
    print(make_mini_data(sys.argv[1] if len(sys.argv) > 1 else "outputs/mini_data"))
