"""One fold's epochs: train, validate, keep the best model, stop early, save the resume file.

Every epoch's randomness is seeded in `segflow.training.trainer.Trainer.train_epoch` from
(seed, epoch) alone, so an epoch resumed from the file replays exactly.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow

from segflow.config import Params
from segflow.training.distributed import World
from segflow.training.folds import Fold
from segflow.training.resume import save_resume
from segflow.training.trainer import Trainer
from segflow.training.validate import validate

__all__ = ["TrainingRun", "train_epochs"]

log = logging.getLogger(__name__)


@dataclass
class TrainingRun:
    """What every step of one training run shares (`segflow.training.train` builds it)."""

    params: Params
    preprocess_dir: Path
    resume_file: Path
    world: World
    #: The resume file's key (`resume_key`) and the hash of the split and plan files.
    key: str
    split_hash: str
    #: The resume file's payload this run continues, None for a fresh run.
    resumed: dict | None = None
    #: The MLflow run (rank 0; None in the other processes).
    run: object = None

    def save(self, trainer_state: dict | None, progress: dict) -> None:
        """Write the resume file (rank 0 only calls this)."""
        payload = {"key": self.key, "run_id": self.run.info.run_id, "trainer": trainer_state, "progress": progress}
        save_resume(self.resume_file, payload)


def train_epochs(job: TrainingRun, trainer: Trainer, state: dict) -> None:
    """Train from the epoch after ``state["epoch"]``, validating and saving the resume file
    after each; `state` is updated in place (best model, history, early-stopping count).
    A fold of several logs its metrics as ``fold<k>_<name>``."""
    params, world = job.params, job.world
    fold, patience = trainer.fold, params.train.early_stopping_patience
    prefix = "" if fold.count == 1 else f"fold{fold.number}_"
    for epoch in range(state["epoch"] + 1, params.train.epochs + 1):
        # Checked first: a run resumed after its early stop does not train on.
        if patience and state["bad_epochs"] >= patience:
            if world.main:
                log.info("early stop: no better val mIoU for %d epochs", patience)
            break
        row, meter = _epoch(job, trainer, epoch)
        improved = _keep_best(state, row, meter, trainer)
        state["epoch"] = epoch
        if world.main:
            mlflow.log_metrics({prefix + k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            job.save(trainer.state(), state)
            _log_epoch(row, params.train.epochs, fold, improved)


def _epoch(job: TrainingRun, trainer: Trainer, epoch: int) -> tuple[dict, object]:
    """Train one epoch and validate: (its history row, the validation meter)."""
    params = job.params
    start = time.perf_counter()
    train_loss, rate = trainer.train_epoch(epoch)
    val_loss, meter = validate(
        trainer.model,
        job.preprocess_dir,
        trainer.plan.tile,
        trainer.loss_fn,
        len(params.classes.names),
        params.classes.ignore_index,
        world=job.world,
        items=trainer.val_entries,
    )
    scores = meter.compute()
    row = {
        "epoch": epoch,
        "steps": epoch * params.train.steps_per_epoch,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "val_miou": scores["miou"],
        "val_mdice": scores["mdice"],
        "lr": trainer.optimizer.param_groups[0]["lr"],
        "images_per_s": rate,
        "seconds": time.perf_counter() - start,
    }
    return row, meter


def _keep_best(state: dict, row: dict, meter: object, trainer: Trainer) -> bool:
    """Append `row` to the history and keep the model if it is the best yet (else count a
    bad epoch, for early stopping); returns whether it improved."""
    state["history"].append(row)
    improved = row["val_miou"] > state["best_miou"]
    if improved:
        state.update(
            best_miou=row["val_miou"],
            best_epoch=row["epoch"],
            bad_epochs=0,
            best_model={k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()},
            best_confusion=meter.confusion.tolist(),  # the out-of-fold scores of the fold
        )
    else:
        state["bad_epochs"] += 1
    return improved


def _log_epoch(row: dict, epochs: int, fold: Fold, improved: bool) -> None:
    where = "" if fold.count == 1 else f"fold {fold.number}/{fold.count} "
    log.info(
        "%sepoch %d/%d  loss %.4f  val loss %.4f  mIoU %.4f  Dice %.4f  %.1f img/s  %.1fs%s",
        where,
        row["epoch"],
        epochs,
        row["train_loss"],
        row["val_loss"],
        row["val_miou"],
        row["val_mdice"],
        row["images_per_s"],
        row["seconds"],
        "  best" if improved else "",
    )
