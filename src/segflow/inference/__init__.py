"""Inference: the one path from an RGB image of any size to a class mask of that size.

Owns the network definition and its checkpoint file (`network`), its optional GloRe
graph-reasoning units (`graph`), and the image geometry and batched prediction around it
(`segment`). Evaluation, the registered pyfunc, the service, the ONNX export checks and
the benchmarks all predict through `segment`.

May import: `segflow.errors` only. This package (with `segflow.registry.pyfunc`) is all
the code a registered model carries, so it must load on a machine without segflow's
data, training or serving dependencies.
"""
