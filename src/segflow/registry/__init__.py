"""Registry: MLflow tracking, registered versions, champion/promote/rollback, model cards
and the registered model itself (the pyfunc).

May import: `segflow.inference` and the shared modules. Never data, training or serving.
`pyfunc` imports `segflow.inference` only: it and that package are the code a
registered model carries (`register.CODE`).
"""
