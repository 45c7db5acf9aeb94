"""The child of the SIGKILL test: writes comparisons as fast as it can and prints, after each COMMIT
returned, how many it has committed so far (flushed), so the parent knows a lower bound at any moment.

    python -m tests.app.feedback.kill_writer DB SEED
"""
from __future__ import annotations

import sys

from app.feedback.store import PreferenceStore

from .factories import comparison, image


def main() -> None:
    path, seed = sys.argv[1], int(sys.argv[2])
    shared = image(seed, 48, 64)
    with PreferenceStore(path) as store:
        print("open", flush=True)
        n = 0
        while True:
            # every third answer reuses one frame (images stored once), the others bring a new one
            img = shared if n % 3 == 0 else image(seed * 1_000_000 + n, 48, 64)
            store.add_comparison(comparison(n, img=img, answer=("A", "B", "tie", "both_bad")[n % 4]))
            n += 1
            print(n, flush=True)


if __name__ == "__main__":
    main()
