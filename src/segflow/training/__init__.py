"""Training: the dataset, the first weights, losses, the train and evaluate stages.

Owns fitting a network on the preprocessed arrays and scoring it on the test split.

May import: `segflow.data`, `segflow.inference`, `segflow.registry` (a run is tracked and
its model registered and scored as served) and the shared modules. Never serving.
"""
