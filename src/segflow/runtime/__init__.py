"""The model runtime: a trained model loaded and run, with nothing of the web service.

`source.ModelSource` names a model (a registered version by alias or number, an exported
ONNX file, a checkpoint) and loads it; `predictor.Predictor` runs it through the one
inference path (`segflow.inference.segment`) on images of any size; `holder.ModelHolder`
keeps the current one and swaps it whole when its source moves; `onnx_file` reads (and
writes) the metadata an exported ONNX file carries; `encode` turns a predicted mask into
its class shares and a palette PNG. `segflow serve` (`segflow.serving`) and `segflow
predict` (`segflow.predict`) both stand on it.

May import: `segflow.inference`, `segflow.registry` and the shared modules. Never data,
training, export, serving or predict. Nothing is imported here, so importing one module
does not load the others.
"""
