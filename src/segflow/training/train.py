"""The train stage: fit the U-Net, track it in MLflow, register a `candidate` version.

The kept checkpoint is the epoch with the best validation mIoU. The MLflow run records
the params, per-epoch metrics, the code and data versions, and the registered model.

Resume: after every epoch the whole training state (weights, optimiser, schedule, best
model, history, MLflow run id) is written to a resume file outside the stage's outputs
(DVC deletes outputs before it reruns a stage). Every epoch's randomness (batch order,
augmentation) is seeded from (seed, epoch) alone, so a run resumed after epoch k ends
exactly as a run that was never interrupted, and it continues the same MLflow run.

Several processes (`train.processes`, see `segflow.training.distributed`): each trains on
its share of every global batch under DDP; only rank 0 logs, writes and registers.

Cross-validation (`train.folds` K > 1, `segflow.training.folds`): the same, once per fold,
in one MLflow run; the resume file also holds the finished folds' best weights, so a run
interrupted in fold k resumes in fold k. One model is registered (ensemble or best fold);
the out-of-fold scores go to the run's metrics (cv_miou_*) and run.json (``cv``).
"""

from __future__ import annotations

import csv
import json
import logging
from contextlib import nullcontext
from pathlib import Path

import mlflow
import torch
from mlflow.entities import RunStatus

from segflow.config import Params
from segflow.errors import Interrupted
from segflow.inference.network import load_checkpoint, save_checkpoint
from segflow.outputs import atomic_dir, file_sha256
from segflow.prepared import PLAN, SPLIT_INDEX, Plan, entries, read_plan
from segflow.registry import tracking
from segflow.registry.register import register_model
from segflow.training.distributed import (
    World,
    check_same_weights,
    current_world,
    from_latest,
    process_group,
)
from segflow.training.epochs import TrainingRun, train_epochs
from segflow.training.folds import (
    AUTO_BELOW,
    AUTO_STEPS,
    MANY_CLASSES,
    Fold,
    cv_metrics,
    cv_summary,
    final_model,
    fold_record,
    fresh_progress,
    interrupted_message,
    make_folds,
    mask_classes,
    step_count,
)
from segflow.training.model import checkpoint_meta
from segflow.training.resume import load_resume, resume_key
from segflow.training.trainer import Trainer, select_device

__all__ = ["HISTORY_FIELDS", "MIN_STEPS", "budget_warning", "train"]

log = logging.getLogger(__name__)

#: Columns of the per-epoch history (DVC plots). ``steps``: optimizer steps so far, the x of
#: the convergence plot (the same work on 7 or 700 photos); also an MLflow metric.
HISTORY_FIELDS = tuple("epoch steps train_loss val_loss val_miou val_mdice lr images_per_s seconds".split())


#: Fewer optimizer steps in a whole run than this draws a warning: one nnU-Net epoch; a
#: pretrained encoder's decoder barely leaves its random start in fewer.
MIN_STEPS = 250


def budget_warning(params: Params) -> str | None:
    """The warning, with its fix, when the run's optimizer steps are fewer than `MIN_STEPS`."""
    train = params.train
    steps = train.epochs * train.steps_per_epoch
    if steps >= MIN_STEPS:
        return None
    return (
        f"only {steps} optimizer steps in all (train.epochs {train.epochs} x train.steps_per_epoch "
        f"{train.steps_per_epoch}), fewer than {MIN_STEPS}: the model may not converge; raise "
        f"train.steps_per_epoch or train.epochs"
    )


def _flat_params(params: Params) -> dict[str, object]:
    flat: dict[str, object] = {}
    for section, values in params.model_dump(mode="json").items():
        if isinstance(values, dict):
            flat.update({f"{section}.{key}": value for key, value in values.items()})
        else:
            flat[section] = values
    # The process count a run actually used is in its tags (`_log_processes`): a param
    # cannot change when a run resumes on another number of processes.
    flat.pop("train.processes", None)
    return flat


def _start_logging(params: Params, plan: Plan, folder: Path, tags: dict, report_dir: Path | None) -> None:
    """What a new MLflow run records before its first epoch: params, tags, the dataset."""
    mlflow.log_params(_flat_params(params))
    mlflow.set_tags(tags)
    if report_dir is not None and report_dir.is_dir():
        mlflow.log_artifacts(str(report_dir), artifact_path="dataset")
    for name in ("duplicates.json", PLAN):
        if (folder / name).is_file():
            mlflow.log_artifact(str(folder / name), artifact_path="dataset")
    mlflow.log_params({"plan.long_side": plan.long_side, "plan.crop": list(plan.crop), "plan.tile": list(plan.tile)})


def train(
    params: Params,
    preprocess_dir: Path,
    out_dir: Path,
    root: Path,
    resume_file: Path,
    report_dir: Path | None = None,
) -> dict:
    """Train, log and register; writes ``model.pt``, ``history.csv`` and ``run.json``.

    `report_dir` (the rasterize stage's dataset report) is logged with the run. Under
    torchrun every process calls this; rank 0 alone writes, logs, registers and returns the
    summary (the others return {}).
    """
    torch.use_deterministic_algorithms(True, warn_only=True)
    world = current_world()
    device = select_device(params.train.device, world)
    with process_group(world, device):
        return _train(params, preprocess_dir, out_dir, root, resume_file, report_dir, world)


def _train(
    params: Params,
    preprocess_dir: Path,
    out_dir: Path,
    root: Path,
    resume_file: Path,
    report_dir: Path | None,
    world: World,
) -> dict:
    """`train` in a process group: find the resume file, set up MLflow (rank 0), train each
    fold not yet finished, then write the outputs and register (`_finish`, rank 0)."""
    folds = make_folds(preprocess_dir, params.train.folds, params.seed, params.classes.ignore_index)
    params = _with_steps(params, preprocess_dir, world)
    if params.train.folds == "auto" and world.main and len(folds) > 1:
        photos = sum(len(part) for part in (folds[0].train, folds[0].val))
        log.info(
            "train.folds auto: %d folds for %d train + val photos (under %d): %dx the training time, "
            "the ensemble registered; set train.folds: 1 for one model",
            len(folds),
            photos,
            AUTO_BELOW,
            len(folds),
        )
    plan = read_plan(preprocess_dir)
    # The split and the plan name every stored file; their content follows from them and
    # the fetched data (DVC's hashes), so hashing the two small files identifies the data.
    split_hash = file_sha256(preprocess_dir / SPLIT_INDEX, preprocess_dir / PLAN)
    job = TrainingRun(params, preprocess_dir, resume_file, world, resume_key(params, split_hash), split_hash)
    job.resumed = _find_resume(job, len(folds))
    state, saved_trainer = (
        (job.resumed["progress"], job.resumed["trainer"]) if job.resumed else (fresh_progress([]), None)
    )
    tags, run_args = _tracking(job, root) if world.main else ({}, {})
    output = atomic_dir(out_dir) if world.main else nullcontext(None)
    run_context = mlflow.start_run(**run_args) if world.main else nullcontext(None)
    with output as staging, run_context as job.run:
        if world.main and not job.resumed:
            _start_logging(params, plan, preprocess_dir, tags, report_dir)
        if world.main:
            _log_processes(world.size, job.resumed)
        state, digests = _train_folds(job, folds, state, saved_trainer)
        if not world.main:
            return {}
        summary = _finish(params, plan, state["folds"], staging, out_dir, job.run, tags, world.size, digests)
    resume_file.unlink(missing_ok=True)
    return summary


def _with_steps(params: Params, preprocess_dir: Path, world: World) -> Params:
    """`params` with ``train.steps_per_epoch: auto`` made a number (`step_count`), said in
    the log where auto gives a small set of many classes its longer run."""
    train = params.train
    steps = step_count(preprocess_dir, train.steps_per_epoch, train.folds, params.classes.ignore_index)
    if train.steps_per_epoch == "auto" and steps != AUTO_STEPS and world.main:
        photos = len(entries(preprocess_dir, "train")) + len(entries(preprocess_dir, "val"))
        log.info(
            "train.steps_per_epoch auto: %d (%dx %d) for one model on %d train + val photos (under %d) of %d "
            "classes (%d or more): a small set of many classes gains from steps, not folds; set "
            "train.steps_per_epoch: %d for the shorter run",
            steps,
            steps // AUTO_STEPS,
            AUTO_STEPS,
            photos,
            AUTO_BELOW,
            mask_classes(preprocess_dir, params.classes.ignore_index),
            MANY_CLASSES,
            AUTO_STEPS,
        )
    return params.model_copy(update={"train": train.model_copy(update={"steps_per_epoch": steps})})


def _find_resume(job: TrainingRun, folds: int) -> dict | None:
    """The resume file's payload to continue from, in every process, or None.

    One process per machine reads its resume file; the newest (folds done, then epochs)
    is sent to every process (on several machines rank 0 may land on one without it).
    """
    params, world = job.params, job.world
    local = load_resume(job.resume_file, job.key, params.train.resume) if world.local_rank == 0 else None
    done = (len(local["progress"]["folds"]) * (params.train.epochs + 1) + local["progress"]["epoch"]) if local else -1
    resumed = from_latest(local, done, world)
    if resumed and world.main:
        state = resumed["progress"]
        where = f" of fold {len(state['folds']) + 1}" if folds > 1 else ""
        log.info("resuming after epoch %d%s of run %s", state["epoch"], where, resumed["run_id"])
    return resumed


def _tracking(job: TrainingRun, root: Path) -> tuple[dict, dict]:
    """Rank 0's MLflow set-up: (the run's tags, `mlflow.start_run`'s arguments), continuing
    the resumed run or starting one named by DVC's experiment."""
    if warning := budget_warning(job.params):
        log.warning(warning)
    tracking.configure(root)
    tags = {
        **tracking.code_version(root),
        **tracking.experiment_tags(),
        "data_md5": tracking.data_version(root),
        "split_sha256": job.split_hash,
    }
    experiment = tracking.experiment_id(job.params.mlflow.experiment, root)
    run_args = {"run_id": job.resumed["run_id"]} if job.resumed else {"experiment_id": experiment}
    if not job.resumed and "dvc.exp_name" in tags:  # mlflow ui lists the run by DVC's name
        run_args["run_name"] = tags["dvc.exp_name"]
    return tags, run_args


def _train_folds(
    job: TrainingRun, folds: list[Fold], state: dict, saved_trainer: dict | None
) -> tuple[dict, list[str]]:
    """Train the folds the resume file has not finished; returns (progress, each process's
    weights digest). Ctrl-C ends the MLflow run as KILLED and raises `Interrupted`."""
    params, world = job.params, job.world
    digests: list[str] = []
    try:
        for fold in folds[len(state["folds"]) :]:
            trainer = Trainer(params, job.preprocess_dir, world, fold)
            if saved_trainer is not None:  # the fold the resume file stopped in
                trainer.load_state(saved_trainer)
                saved_trainer = None
            if world.main:
                log.info("training %s", trainer.describe())
            train_epochs(job, trainer, state)
            # Every process's scores are the reduced ones, so all stop at the same epoch.
            digests = check_same_weights(trainer.model, world)
            state = fresh_progress([*state["folds"], fold_record(state, fold)])
            if world.main:  # a fold finished is never trained again
                job.save(None, state)
    except KeyboardInterrupt:
        if world.main:  # KILLED, not FAILED: the resume file continues this run
            mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
        raise Interrupted(interrupted_message(state, len(folds), params.train.epochs)) from None
    return state, digests


def _finish(
    params: Params,
    plan: Plan,
    records: list[dict],
    staging: Path,
    out_dir: Path,
    run: object,
    tags: dict,
    processes: int,
    digests: list[str],
) -> dict:
    """Write model.pt, history.csv and run.json, log the scores and register the model."""
    model, record = final_model(records, params)
    save_checkpoint(model, staging / "model.pt", checkpoint_meta(params, plan, **record))
    with (staging / "history.csv").open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=(("fold",) if len(records) > 1 else ()) + HISTORY_FIELDS)
        writer.writeheader()
        writer.writerows(row for record in records for row in record["history"])
    mlflow.log_artifact(str(staging / "history.csv"))
    best, meta = load_checkpoint(staging / "model.pt")
    cv = cv_summary(records, params.train.fold_model) if len(records) > 1 else None
    metrics = {"best_val_miou": meta.val_miou, **(cv_metrics(cv) if cv else {})}
    if meta.epoch is not None:
        metrics["best_epoch"] = meta.epoch
    mlflow.log_metrics(metrics)
    version = register_model(best, params, tags, meta, record_dir=out_dir.parent / "promotions")
    summary = {
        "run_id": run.info.run_id,
        "experiment_id": run.info.experiment_id,
        "model_name": params.mlflow.model_name,
        "model_version": version,
        "best_epoch": meta.epoch,
        "best_val_miou": meta.val_miou,
        "epochs_run": sum(record["epochs_run"] for record in records),
        "processes": processes,
        # The last epoch's weights in each process: all the same (checked).
        "rank_weights_sha256": digests,
    }
    if cv:  # the registered model (ensemble or best fold) and the out-of-fold scores
        summary["cv"] = {**cv, "fold": meta.fold}
    (staging / "run.json").write_text(json.dumps(summary, indent=1))
    return summary


def _log_processes(size: int, resumed: dict | None) -> None:
    """The process count as tags (MLflow params never change): a run resumed on another
    number of processes keeps each count it ran on."""
    earlier = (mlflow.active_run().data.tags.get("train.world_sizes") or "") if resumed else ""
    sizes = [s for s in earlier.split(",") if s]
    if not sizes or sizes[-1] != str(size):
        sizes.append(str(size))
    mlflow.set_tags({"train.world_size": size, "train.world_sizes": ",".join(sizes)})
