"""Write the embedded sample dataset: synthetic street scenes with VIA annotations.

    python scripts/make_sample.py --out data

The output folder must be missing or empty; the same arguments give identical bytes.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sample import generate_sample


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and generate the sample."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path("data"), help="folder to write, missing or empty (default: data)"
    )
    parser.add_argument("--n", type=int, default=120, help="number of images (default: 120)")
    parser.add_argument("--width", type=int, default=320, help="image width (default: 320)")
    parser.add_argument("--height", type=int, default=240, help="image height (default: 240)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        generate_sample(args.out, n_images=args.n, width=args.width, height=args.height, seed=args.seed)
    except (ValueError, FileExistsError) as exc:
        parser.error(str(exc))


if __name__ == "__main__":
    main()
