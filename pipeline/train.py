"""Stage train: fit the U-Net, log the run to MLflow, register a `candidate` version.

With train.processes > 1 it starts itself again under torchrun, one process per device."""

import logging
import os
from pathlib import Path

from segflow.stage import run_stage
from segflow.training.distributed import World, check_batch, launch, resolve_processes
from segflow.training.train import train


def main(params, args) -> None:
    processes = resolve_processes(params.train.processes, params.train.device)
    if processes > 1 and "WORLD_SIZE" not in os.environ:
        # This script again, once per process, under torchrun (which sets WORLD_SIZE);
        # started by torchrun on several machines, it trains in place.
        check_batch(params.train.batch_size, World(size=processes))
        launch(processes)
        return
    summary = train(params, args.data, args.out, root=Path.cwd(), resume_file=args.resume, report_dir=args.report)
    if not summary:  # not rank 0
        return
    log = logging.getLogger("segflow")
    name, version = summary["model_name"], summary["model_version"]
    cv = summary.get("cv")
    if cv is None:
        log.info(
            "registered %s version %s (alias candidate), best val mIoU %.4f at epoch %d",
            name,
            version,
            summary["best_val_miou"],
            summary["best_epoch"],
        )
        return
    chosen = "ensemble of the folds" if cv["model"] == "ensemble" else f"fold {cv['fold']}"
    log.info(
        "registered %s version %s (alias candidate): the %s; %d-fold cross-validation mIoU %.4f +- %.4f "
        "(out of fold on %d images; pooled %.4f)",
        name,
        version,
        chosen,
        cv["folds"],
        cv["miou_mean"],
        cv["miou_std"],
        cv["images"],
        cv["miou_pooled"],
    )


if __name__ == "__main__":
    run_stage(
        __doc__,
        {
            "data": "preprocessed array folder",
            "out": "training output folder",
            "resume": "resume file, kept outside the outputs while a run is unfinished",
            "report": "dataset report folder, logged with the run",
            "classes": "class list the fetch stage wrote (its names are used when classes.names is auto)",
        },
        main,
    )
