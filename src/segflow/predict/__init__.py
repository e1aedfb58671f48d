"""`segflow predict`: a folder of new photos -> masks, confidence, and pre-annotations.

A part above runtime and data, never the web service: it loads a model as the service
does (`segflow.runtime.source.ModelSource`), segments through the one inference path
(`segflow.inference.segment`), and writes the predictions back in the annotation
tools' formats (`segflow.data.writers`), closing the loop annotate -> train -> predict
-> correct -> train. Modules, in the order a run uses them: `inputs` (what to read),
`masks` (segment, write, resume), `report` (summary and share tables), `annotations`
(polygons for the tool), `batch` (one run), `command` (the CLI).

Nothing is imported here, so the command line stays quick to start.
"""
