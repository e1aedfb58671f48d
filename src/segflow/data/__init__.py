"""Data: from a user's photos and annotations to the arrays training reads.

Owns the sources (`sources`), the annotation readers (`readers`), the canonical polygon
records (`records`), the fetch, rasterize and preprocess stages, and the dataset report.

May import: the shared modules (`segflow.config`, `errors`, `outputs`) and
`segflow.inference.segment`'s letterbox, so training images are framed exactly as
inference frames them. Never training, registry or serving.
"""
