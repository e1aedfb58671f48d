"""What every pipeline stage script shares: arguments, logging, and clean failures."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from rich.logging import RichHandler

from segflow.config import Params, load_params
from segflow.config.auto_classes import with_classes_file
from segflow.errors import Interrupted, SegflowError

__all__ = ["run_stage"]

log = logging.getLogger("segflow")


def run_stage(description: str, paths: dict[str, str], body: Callable[[Params, argparse.Namespace], None]) -> None:
    """Parse ``--params`` and one ``--<name> PATH`` per entry of `paths`, then run `body`.

    Paths come from dvc.yaml (written there once); `paths` maps each option to its help.
    Bad input (a `SegflowError`) prints its message and exits 1, without a traceback.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    for name, help_text in paths.items():
        parser.add_argument(f"--{name}", type=Path, required=True, help=help_text)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(show_path=False, rich_tracebacks=True)],
    )
    try:
        params = load_params(args.params)
        if "classes" in paths:  # the fetch stage's class list: the names when classes.names is auto
            params = with_classes_file(params, args.classes)
        body(params, args)
    except Interrupted as exc:  # Ctrl-C where the stage knows what it kept (train)
        log.error("%s", exc)
        sys.exit(130)
    except KeyboardInterrupt:  # Ctrl-C elsewhere: outputs are written atomically, so none is half-written
        log.error("interrupted; rerun the stage (dvc repro) to start it again")
        sys.exit(130)
    except SegflowError as exc:
        log.error("%s", exc)
        sys.exit(1)
