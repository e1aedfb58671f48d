"""`segflow sweep`: a grid or an Optuna search over params.yaml keys, each trial a DVC experiment.

A part on top of the registry, like the command line: trials are queued with
``dvc exp run --queue -S key=value -n <sweep>-<k>`` and run by DVC's queue workers
(``dvc queue start -j N``), so each is reproducible with ``dvc exp apply``; their MLflow runs
(tagged ``dvc.exp_name`` by the train stage) become children of one parent run per sweep;
the best trial on the validation split gets ``@candidate`` and `segflow promote` judges it on
the test split. Modules, in the order a sweep uses them: `space` (the grid or search space),
`state` (what is done, for resuming), `queue` (DVC), `runs` (MLflow), `driver` (the loop),
`report` (table, CSV, plot), `command` (the CLI).

Nothing is imported here, so the command line stays quick to start.
"""
