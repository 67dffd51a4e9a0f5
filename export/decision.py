"""``decision.onnx``: the EEG encoder's graph with the prototype head folded in, for devices without Python.

The runtime decides with the encoder plus numpy (:meth:`eegsine.runtime.EEGDecoder.probabilities`:
softmax(-scale / 2 * ||z - p_c||^2) over the class prototypes). :func:`build_decision` writes the same
decision as one ONNX graph, ``eeg`` (1, n_chans, n_times) float32 -> ``probabilities`` (1, n_classes)
float32, that ONNX Runtime's C/C++/C#/Java APIs or BrainFlow's ``MLModel`` run as is. It is composed
with the ``onnx`` API from the bundle's own encoder file of each precision (the INT8 variant from the
INT8 encoder, its Q/DQ scales untouched), not exported again from torch, so it decides as that file does:

* only the ``embedding`` branch is kept (the tokens feed the UNet, not the decision);
* the batch axis is fixed at 1: BrainFlow's ONNX classifier (``onnx_classifier.cpp``, 5.23) creates its
  input tensor with the graph's declared dims, and refuses a dynamic (-1) one at ``predict``;
* the head: Unsqueeze -> Sub(prototypes) -> Mul(itself) -> ReduceSum(last axis) -> Mul(-scale / 2) ->
  Softmax, the prototypes and the fitted scale as constants;
* opset :data:`~eegsine.runtime.contracts.DECISION_OPSET` (16) and IR version 8: BrainFlow 5.23 ships
  ONNX Runtime 1.11, which refuses opset 17 and newer models (measured) and reads IR <= 8.

Hand-written, the opset conversion (:func:`downgrade`): ``onnx.version_converter`` has no adapter for
Split-18 or LayerNormalization-17 (it stops on the transformer encoder, measured with onnx 1.21), so
nodes whose operator is unchanged between the two opsets are kept, Reduce* axes inputs become
attributes, and LayerNormalization is written as its definition (ReduceMean, Sub, Mul, Add, Sqrt, Div);
any other changed operator is refused by name. The export proves the result equal to the numpy
decoder on the golden set (:func:`eegsine.runtime.verify.decision_figures`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from eegsine.errors import UserError
from eegsine.io import atomic_path
from eegsine.runtime.contracts import DECISION_OPSET, ExportContract

DECISION_IR_VERSION = 8  # the newest IR ONNX Runtime 1.11 (BrainFlow 5.23's) loads
EMBEDDING = "embedding"


def _constants(graph: Any) -> dict[str, np.ndarray]:
    """Every tensor whose value the graph fixes: initializers and Constant nodes' values."""
    from onnx import numpy_helper

    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return out


def keep_outputs(graph: Any, names: list[str]) -> None:
    """Drop every graph output but ``names`` and the nodes, initializers and inputs no kept output needs."""
    need, kept = set(names), []
    for n in reversed(graph.node):
        if need & set(n.output):
            kept.append(n)
            need |= {i for i in n.input if i}
            for a in n.attribute:
                if a.type == a.GRAPH:  # a subgraph reads outer tensors by name
                    need |= {i for sub in a.g.node for i in sub.input}
    del graph.node[:]
    graph.node.extend(reversed(kept))
    outputs = [o for o in graph.output if o.name in names]
    del graph.output[:]
    graph.output.extend(outputs)
    inits = [t for t in graph.initializer if t.name in need]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    del graph.value_info[:]  # intermediate shapes carried the dynamic batch; ORT infers them again


def _layer_norm(n: Any, rank: int | None) -> list[Any]:
    """LayerNormalization (opset 17) as its ONNX definition in opset-16 ops (stash_type 1: float32 throughout)."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    if len([o for o in n.output if o]) > 1:
        raise UserError(f"decision.onnx: LayerNormalization {n.name!r} uses its Mean/InvStdDev outputs; "
                        "no opset-16 form is written for them")
    axis = int(attrs.get("axis", -1))
    if axis >= 0 and rank is None:
        raise UserError(f"decision.onnx: LayerNormalization {n.name!r} has axis {axis} on an input of unknown rank")
    axes = list(range(axis, 0)) if axis < 0 else list(range(axis - rank, 0))
    eps = np.float32(attrs.get("epsilon", 1e-5))
    p = f"{n.name or n.output[0]}/decomposed"
    x = n.input[0]
    nodes = [helper.make_node("ReduceMean", [x], [f"{p}/mean"], axes=axes, keepdims=1),
             helper.make_node("Sub", [x, f"{p}/mean"], [f"{p}/centred"]),
             helper.make_node("Mul", [f"{p}/centred", f"{p}/centred"], [f"{p}/sq"]),
             helper.make_node("ReduceMean", [f"{p}/sq"], [f"{p}/var"], axes=axes, keepdims=1),
             helper.make_node("Constant", [], [f"{p}/eps"], value=helper.make_tensor(f"{p}/eps", 1, [], [eps])),
             helper.make_node("Add", [f"{p}/var", f"{p}/eps"], [f"{p}/var_eps"]),
             helper.make_node("Sqrt", [f"{p}/var_eps"], [f"{p}/std"]),
             helper.make_node("Div", [f"{p}/centred", f"{p}/std"], [f"{p}/normed"])]
    has_bias = len(n.input) > 2 and n.input[2]
    nodes.append(helper.make_node("Mul", [f"{p}/normed", n.input[1]], [f"{p}/scaled" if has_bias else n.output[0]]))
    if has_bias:
        nodes.append(helper.make_node("Add", [f"{p}/scaled", n.input[2]], [n.output[0]]))
    return nodes


def _same_operator(n: Any, src: int, dst: int) -> bool:
    """Whether ``n`` means the same at opset ``dst`` as at ``src``: its schema did not change in between, or only
    by what this node does not use (attributes and inputs the older schema has too)."""
    from onnx import defs

    try:
        old = defs.get_schema(n.op_type, dst, n.domain)
    except Exception:  # noqa: BLE001 - onnx raises SchemaError where the operator did not exist yet at dst
        return False
    if old.since_version == defs.get_schema(n.op_type, src, n.domain).since_version:
        return True
    return {a.name for a in n.attribute} <= set(old.attributes) and len(n.input) <= old.max_input


def downgrade(model: Any, opset: int = DECISION_OPSET) -> None:
    """Rewrite ``model`` (default domain at a newer opset) to ``opset``, in place; see the module docstring."""
    from onnx import helper, shape_inference

    src = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if src <= opset:
        return
    consts = _constants(model.graph)
    ranks = {v.name: len(v.type.tensor_type.shape.dim)
             for v in shape_inference.infer_shapes(model).graph.value_info}
    nodes = []
    for n in model.graph.node:
        if n.domain not in ("", "ai.onnx") or _same_operator(n, src, opset):
            nodes.append(n)
        elif n.op_type == "LayerNormalization":
            nodes += _layer_norm(n, ranks.get(n.input[0]))
        elif n.op_type.startswith("Reduce") and len(n.input) == 1:
            # no axes input: reduce over every axis, as an opset-13 Reduce* without its axes attribute does
            # (the spatial encoder's detrend, ReduceMean of a constant ramp); noop_with_empty_axes=1 is identity
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            if attrs.pop("noop_with_empty_axes", 0):
                nodes.append(helper.make_node("Identity", [n.input[0]], list(n.output), n.name))
            else:
                nodes.append(helper.make_node(n.op_type, [n.input[0]], list(n.output), n.name, **attrs))
        elif n.op_type.startswith("Reduce") and len(n.input) == 2 and n.input[1] in consts:
            # opset 18 moved Reduce*'s axes from an attribute to an input; constant axes go back
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            if attrs.pop("noop_with_empty_axes", 0) and not consts[n.input[1]].size:
                raise UserError(f"decision.onnx: {n.op_type} {n.name!r} is a no-op (empty axes), no opset-{opset} form")
            nodes.append(helper.make_node(n.op_type, [n.input[0]], list(n.output), n.name,
                                          axes=consts[n.input[1]].astype(np.int64).tolist(), **attrs))
        else:
            raise UserError(f"decision.onnx: the encoder's {n.op_type} node {n.name!r} (opset {src}) has no "
                            f"opset-{opset} form here; BrainFlow's ONNX Runtime 1.11 needs opset <= {opset}")
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = opset


def _head(graph: Any, prototypes: np.ndarray, scale: float) -> None:
    """embedding (1, D) -> probabilities (1, K) = softmax(-scale / 2 * ||embedding - prototype_k||^2)."""
    from onnx import TensorProto, helper, numpy_helper

    k = len(prototypes)
    graph.initializer.extend([
        numpy_helper.from_array(np.ascontiguousarray(prototypes, np.float32), "decision/prototypes"),
        numpy_helper.from_array(np.array([1], np.int64), "decision/class_axis"),
        numpy_helper.from_array(np.array([-1], np.int64), "decision/feature_axis"),
        numpy_helper.from_array(np.array(-0.5 * scale, np.float32), "decision/neg_half_scale")])
    graph.node.extend([
        helper.make_node("Unsqueeze", [EMBEDDING, "decision/class_axis"], ["decision/z"]),       # (1, 1, D)
        helper.make_node("Sub", ["decision/z", "decision/prototypes"], ["decision/diff"]),       # (1, K, D)
        helper.make_node("Mul", ["decision/diff", "decision/diff"], ["decision/sq"]),
        helper.make_node("ReduceSum", ["decision/sq", "decision/feature_axis"], ["decision/d2"], keepdims=0),
        helper.make_node("Mul", ["decision/d2", "decision/neg_half_scale"], ["decision/logits"]),  # (1, K)
        helper.make_node("Softmax", ["decision/logits"], ["probabilities"], axis=-1)])
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, k]))


def build_decision(encoder: Path, out: Path, contract: ExportContract, prototypes: np.ndarray,
                   scale: float) -> dict[str, Any]:
    """Write ``out``: the encoder file ``encoder`` + the prototype head, as ``contract`` says; returns its
    manifest facts (opset, IR version, node count, the ops it holds)."""
    import onnx

    from eegsine.export.onnx_export import set_contract

    model = onnx.load(str(encoder))
    graph = model.graph
    if EMBEDDING not in [o.name for o in graph.output] or len(graph.input) != 1:
        raise UserError(f"{encoder}: not an EEG encoder graph (one input, an {EMBEDDING!r} output)")
    keep_outputs(graph, [EMBEDDING])
    dims = graph.input[0].type.tensor_type.shape.dim
    for d, want in zip(dims, contract.inputs[0].shape):
        d.Clear()
        d.dim_value = int(want)
    downgrade(model, contract.opset)
    keep_outputs(graph, [EMBEDDING])  # again: the Reduce* axes constants the downgrade made attributes
    _head(graph, prototypes, scale)
    used = {n.domain for n in graph.node} | {""}
    ops = [o for o in model.opset_import if o.domain in used or (o.domain == "ai.onnx" and "" in used)]
    del model.opset_import[:]
    model.opset_import.extend(ops)  # the INT8 file imports domains it never uses, which ORT 1.11 may not know
    model.ir_version = DECISION_IR_VERSION
    set_contract(model, contract)
    onnx.checker.check_model(model, full_check=True)
    with atomic_path(out) as tmp:
        onnx.save(model, str(tmp))
    return {"opset": contract.opset, "ir_version": DECISION_IR_VERSION, "nodes": len(graph.node),
            "ops": sorted({n.op_type for n in graph.node})}
