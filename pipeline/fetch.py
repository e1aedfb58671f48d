"""Stage fetch: validate the annotated photos named in params and snapshot them."""
from rich import print as rprint
from rich.table import Table

from segflow.fetch import fetch
from segflow.stage import run_stage


def main(params, args) -> None:
    manifest = fetch(params, args.out)
    table = Table(title=f"fetch: {manifest['images']} images, {manifest['regions']} regions")
    table.add_column("class")
    table.add_column("regions", justify="right")
    for name, count in manifest["regions_per_class"].items():
        table.add_row(name, str(count))
    for shape, count in manifest["skipped_regions"].items():
        table.add_row(f"[yellow]skipped {shape}[/]", str(count))
    rprint(table)


if __name__ == "__main__":
    run_stage(__doc__, {"out": "snapshot folder to write"}, main)
