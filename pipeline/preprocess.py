"""Stage preprocess: letterbox images and masks, split train/val/test, store arrays."""

import logging

from segflow.data.preprocess import preprocess
from segflow.stage import run_stage


def main(params, args) -> None:
    counts = preprocess(params, args.fetch, args.masks, args.out)
    logging.getLogger("segflow").info("split: %s", counts)


if __name__ == "__main__":
    run_stage(
        __doc__,
        {"fetch": "fetch snapshot folder", "masks": "mask folder", "out": "array folder to write"},
        main,
    )
