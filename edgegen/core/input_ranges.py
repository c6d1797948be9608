"""Valid values of integer inputs that index a table (class labels, token ids), for artifacts
built before the manifest recorded them: the rows of the table the input indexes, read from the
component's weight specs. Where no such table is found the input stays unchecked."""

from __future__ import annotations

from dataclasses import replace

from .specs import INTEGER_DTYPES

# input name -> how the name of the table it indexes ends (TVM's names of the captured parameters)
TABLES = {"class_labels": "class_embedder_embedding_table_weight", "input_ids": "token_embedding_weight"}


def with_ranges(component):
    """The component (an artifact.Component) with a range on each integer input that indexes a known table."""
    inputs = []
    for spec in component.inputs:
        suffix = TABLES.get(spec.name)
        if spec.range is None and suffix and spec.dtype in INTEGER_DTYPES:
            rows = [w.shape[0] for w in component.weights if w.name.endswith(suffix) and len(w.shape) == 2]
            if rows:
                spec = replace(spec, range=(0, min(rows) - 1))
        inputs.append(spec)
    return replace(component, inputs=inputs)
