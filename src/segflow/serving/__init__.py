"""`segflow serve`: a web page and a JSON API on the `@champion` model.

`app.create_app` builds the FastAPI application around a model source
(`segflow.runtime.source.ModelSource`: a registered version by alias or number, or an
exported ONNX file); `app.run` serves it with uvicorn. Beside it: `decode` and `uploads`
(what a request may send), `gate` (how many are segmented at once), `metrics`, `security`,
`browser` (the page's in-browser mode), Label Studio's ML backend protocol and pull
(`labelstudio`, `labelstudio_client`, `labelstudio_config`, `labelstudio_pull`), and the
commands serve, backend and pull-annotations (`commands`).

May import: `segflow.runtime`, `segflow.registry`, `segflow.inference`, `segflow.data` (the
canonical region records and `data.trace`) and the shared modules. Nothing is imported
here: import what you use from its module (``from segflow.serving.app import create_app``).
"""
