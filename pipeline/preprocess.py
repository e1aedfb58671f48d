"""Stage preprocess: split train/val/test, plan the working resolution from the data, store images."""

import json
import logging

from rich import print as rprint
from rich.table import Table

from segflow.data.preprocess import preprocess
from segflow.prepared import read_plan, write_plan
from segflow.stage import run_stage


def main(params, args) -> None:
    counts = preprocess(params, args.fetch, args.masks, args.out)
    logging.getLogger("segflow").info("split: %s", counts)
    plan = read_plan(args.out)
    write_plan(plan, args.plan)
    table = Table(title=f"plan ({plan.mode}, from {plan.images} training images)")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("median image long side / aspect", f"{plan.median_long_side} / {plan.median_aspect}")
    table.add_row("5th-percentile object across (% of long side)", str(plan.object_p5_across_pct))
    table.add_row("working long side (px)", f"{plan.long_side} (limited by {plan.limited_by})")
    table.add_row("scale of the median image", str(plan.median_scale))
    table.add_row("training crop", "x".join(map(str, plan.crop)))
    table.add_row("inference tile", "x".join(map(str, plan.tile)))
    for name, measured in plan.classes.items():
        values = list(measured.model_dump().values())
        table.add_row(f"  {name}: objects, fragments, p5 / median across %", json.dumps(values))
    rprint(table)


if __name__ == "__main__":
    run_stage(
        __doc__,
        {
            "fetch": "fetch snapshot folder",
            "masks": "mask folder",
            "out": "preprocessed folder to write",
            "plan": "where to copy the plan (a small git-tracked metrics file)",
            "classes": "class list the fetch stage wrote (its names are used when classes.names is auto)",
        },
        main,
    )
