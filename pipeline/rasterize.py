"""Stage rasterize: regions of the fetch snapshot -> class-index PNG masks, and the dataset report."""

from rich import print as rprint

from segflow.data.rasterize import rasterize
from segflow.data.report import read_report, report_table
from segflow.stage import run_stage


def main(params, args) -> None:
    rasterize(params, args.fetch, args.out, report_dir=args.report)
    rprint(report_table(read_report(args.report)))


if __name__ == "__main__":
    run_stage(
        __doc__,
        {
            "fetch": "fetch snapshot folder",
            "out": "mask folder to write",
            "report": "dataset report folder to write (report.json, class_pixels.png)",
            "classes": "class list the fetch stage wrote (its names are used when classes.names is auto)",
        },
        main,
    )
