"""Stage fetch: materialise the source named in params, validate it and snapshot it."""

from rich import print as rprint

from segflow.data.fetch import CLASSES_FILE, fetch
from segflow.data.report import read_report, report_table
from segflow.stage import run_stage


def main(params, args) -> None:
    fetch(params, args.out, cache_dir=args.cache)
    rprint(report_table(read_report(args.out)))
    # The class list in effect: with classes.names: auto, the one to copy into params.yaml.
    # Printed as plain text: rich would read the YAML list "[background, ...]" as markup.
    print((args.out / CLASSES_FILE).read_text(), flush=True)


if __name__ == "__main__":
    run_stage(
        __doc__,
        {
            "out": "snapshot folder to write",
            "cache": "downloads and extracted archives, kept between runs (not an output)",
        },
        main,
    )
