"""`segflow export`: a trained network as ONNX files, fp32 and int8, verified against PyTorch.

`export` writes and verifies the files and tags the registered version with them;
`quantize` makes the int8 file, calibrated on training images. The files carry their own
metadata (`segflow.runtime.onnx_file`), which is what lets the runtime serve one alone.

May import: `segflow.runtime`, `segflow.registry`, `segflow.inference` and the shared
modules. Never serving or predict. Nothing is imported here.
"""
