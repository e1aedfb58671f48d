"""Stage rasterize: polygons of the fetch snapshot -> class-index PNG masks."""
from rich import print as rprint
from rich.table import Table

from segflow.rasterize import rasterize
from segflow.stage import run_stage


def main(params, args) -> None:
    pixels = rasterize(params, args.fetch, args.out)
    total = sum(pixels.values()) or 1
    table = Table(title="rasterize: pixel share per class")
    table.add_column("class")
    table.add_column("share", justify="right")
    for name, count in pixels.items():
        table.add_row(name, f"{count / total:.1%}")
    rprint(table)


if __name__ == "__main__":
    run_stage(__doc__, {"fetch": "fetch snapshot folder", "out": "mask folder to write"}, main)
