"""Stage predict@NAME (optional): a folder or archive of unlabeled photos (predict.sources)
segmented by the pipeline's model: masks, confidence, class shares, pre-annotations."""

from rich import print as rprint

from segflow.predict.batch import predict_source
from segflow.predict.segment import FAILED
from segflow.runtime.source import ModelSource
from segflow.stage import run_stage


def main(params, args) -> None:
    _, predictor = ModelSource(args.model).load()
    run = predict_source(
        predictor,
        args.source,
        args.out,
        params.predict,
        label_map=params.classes.label_map,
        label_key=params.fetch.label_key,
        unlabeled=params.rasterize.unlabeled,
        fetch=params.fetch,
    )
    failed = [o for o in run.outcomes if o.status == FAILED]
    for outcome in failed:
        rprint(f"[red]skipped {outcome.name}: {outcome.error}[/]")
    least = next((o for o in run.outcomes if o.record), None)
    rprint(
        f"{len(run.outcomes) - len(failed)} photos segmented ({run.images_per_second:.2f} images/s), "
        f"{len(failed)} unreadable; least confident: "
        + (f"{least.name} ({least.record['confidence']:.3f})" if least else "none")
        + f"; see {args.out / 'summary.csv'}"
    )


if __name__ == "__main__":
    run_stage(
        __doc__,
        {
            "source": "folder or archive of photos (an entry of predict.sources)",
            "model": "checkpoint of the train stage",
            "out": "folder to write",
            "classes": "class list the fetch stage wrote (unused: the model carries its classes)",
        },
        main,
    )
