"""Stage evaluate: the test split at its original size: IoU per class, mIoU, Dice (95% intervals), pictures."""

from pathlib import Path

from rich import print as rprint
from rich.table import Table

from segflow.stage import run_stage
from segflow.training.evaluate import evaluate


def main(params, args) -> None:
    metrics = evaluate(params, args.data, args.model, args.out, root=Path.cwd())
    test = metrics["test"]
    interval = " - ".join(f"{v:.3f}" for v in test["miou_ci95"] if v is not None)
    table = Table(
        title=f"test, {test['images']} images at their own size: mIoU {test['miou']:.3f} "
        f"(95% interval {interval}), Dice {test['mdice']:.3f}"
    )
    table.add_column("class")
    table.add_column("IoU", justify="right")
    table.add_column("95% interval", justify="right")
    table.add_column("Dice", justify="right")
    for name in test["iou"]:
        interval = [v for v in test["iou_ci95"].get(name) or [] if v is not None]
        table.add_row(name, str(test["iou"][name]), " - ".join(f"{v:.3f}" for v in interval), str(test["dice"][name]))
    rprint(table)
    rprint(f"majority-class baseline mIoU: {metrics['majority_class_miou']}")
    if cv := metrics.get("cv"):
        rprint(
            f"{cv['folds']}-fold cross-validation mIoU (train and val images, out of fold): "
            f"{cv['miou_mean']} +- {cv['miou_std']}; registered: {cv['model']}"
        )


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
