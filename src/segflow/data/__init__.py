"""Data: from a user's photos and annotations to the arrays training reads.

Owns the sources (`sources`), the annotation readers (`readers`), the canonical polygon
records (`records`), polygons to masks and back (`draw`, `trace`), the fetch, rasterize
and preprocess stages, the dataset report, and the annotation writers (`writers`).

May import: the shared modules (`segflow.config`, `errors`, `outputs`) and
`segflow.inference`, the floor below (preprocess resizes with `segment`'s own resize, so
training images are framed exactly as inference frames them). Never training, registry,
runtime, export, serving or predict.
"""
