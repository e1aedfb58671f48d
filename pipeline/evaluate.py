"""Stage evaluate: test-split IoU per class, mIoU, Dice, confusion matrix, overlays."""

from pathlib import Path

from rich import print as rprint
from rich.table import Table

from segflow.stage import run_stage
from segflow.training.evaluate import evaluate


def main(params, args) -> None:
    metrics = evaluate(params, args.data, args.model, args.out, root=Path.cwd())
    test = metrics["test"]
    table = Table(title=f"test ({test['images']} images): mIoU {test['miou']}, Dice {test['mdice']}")
    table.add_column("class")
    table.add_column("IoU", justify="right")
    table.add_column("Dice", justify="right")
    for name in test["iou"]:
        table.add_row(name, str(test["iou"][name]), str(test["dice"][name]))
    rprint(table)
    rprint(f"majority-class baseline mIoU: {metrics['majority_class_miou']}")


if __name__ == "__main__":
    run_stage(
        __doc__,
        {
            "data": "preprocessed array folder",
            "model": "training output folder",
            "out": "evaluation folder to write",
            "classes": "class list the fetch stage wrote (its names are used when classes.names is auto)",
        },
        main,
    )
