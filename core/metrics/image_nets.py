"""The standard image-metric networks (Inception-v3, LPIPS-AlexNet, an ImageNet classifier) from local ONNX files.

torchmetrics' ``FrechetInceptionDistance(feature=2048)`` and ``InceptionScore`` build
torch-fidelity's Inception-v3, and its LPIPS, like the ``lpips`` package, builds torchvision's
AlexNet; torchvision does not import beside the CPU torch wheel that ``make`` installs (and
torch-fidelity, lpips and torchvision are not in this environment), so none of them runs here.
The user therefore brings each network as an ONNX file exported on another machine (README,
"Data"), run with onnxruntime: no torchvision, no unpickling of user code. Each file is named
in every table by its metadata name and sha256.

The files' contract (``eegsine.metrics.images`` scores them with the domain metrics' formulas):

* feature network (``--feature-net``): one float image input (N, 3, H, W) and an output named
  ``features`` (N, D) (or pytorch-fid's pool3 (N, D, 1, 1)), optionally ``logits`` (N, K):
  FID on ``features``, IS on softmax(``logits``);
* LPIPS network (``--lpips-net``): two float image inputs (N, 3, H, W), one output: the
  per-pair distance (N,) (or the ``lpips`` package's (N, 1, 1, 1));
* classifier (``--classifier-net``): one float image input and an output named ``logits``
  (N, K); its top-1 is restricted to the data set's classes through a JSON class map
  ``{"<class name>": <logit index>, ...}`` (EEGCVPR40: WordNet id -> ImageNet index), which
  may be left out when K equals the number of classes (then logit i is class i).

Images (N, C, H', W') in [0, 1] are prepared the way pytorch-fid feeds its Inception: a single
channel is repeated to three; when the input's H x W is fixed in the graph they are resized to
it with ``F.interpolate(mode="bilinear", align_corners=False)`` (a graph with dynamic H, W must
resize itself); then [0, 1] is mapped to the range in the metadata entry
``eegsine.input_range`` ("0,1" or "-1,1"; default "-1,1", what pytorch-fid's
``normalize_input`` produces and the ``lpips`` package expects). A graph with a fixed batch size
is fed in chunks of that size. Metadata ``eegsine.name`` names the metrics (``fid_<name>``, ...);
without it the file stem does.

Hand-written: only this session wrapper and its checks (every bad file is one line).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from eegsine.errors import UserError

INPUT_RANGES = {"0,1": (0.0, 1.0), "-1,1": (-1.0, 1.0)}
NAME_KEY, RANGE_KEY = "eegsine.name", "eegsine.input_range"


def _static(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


@dataclasses.dataclass
class OnnxImageNet:
    """One ONNX image network: its session, the image inputs' geometry and its metadata."""

    path: Path
    name: str
    sha256: str
    input_range: str
    session: Any
    inputs: list[str]
    outputs: dict[str, int]       # output name -> rank
    channels: int | None          # None: dynamic in the graph
    size: tuple[int, int] | None  # (H, W) the images are resized to; None: dynamic, fed as they are
    batch: int | None             # fixed batch size of the graph, None: dynamic

    def describe(self) -> dict[str, Any]:
        """What metrics.json records of the network (every table names it by this)."""
        return {"file": str(self.path), "sha256": self.sha256, "input_range": self.input_range,
                "input": [self.channels or "C", *(self.size or ("H", "W"))],
                "resize": "bilinear (align_corners=False)" if self.size else "none (the graph's own)"}

    def prepare(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """(N, C, H', W') in [0, 1] -> the graph's input (N, 3, H, W) float32 in its declared range."""
        x = torch.as_tensor(images, dtype=torch.float32)
        if x.ndim != 4:
            raise UserError(f"{self.path}: images must be (N, C, H, W), got {tuple(x.shape)}")
        if self.channels is not None and x.shape[1] != self.channels:
            if x.shape[1] != 1:
                raise UserError(f"{self.path}: expects {self.channels}-channel images, got {x.shape[1]} channels")
            x = x.expand(-1, self.channels, -1, -1)
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        lo, hi = INPUT_RANGES[self.input_range]
        return np.ascontiguousarray((x * (hi - lo) + lo).numpy(), dtype=np.float32)

    def run(self, *images: np.ndarray | torch.Tensor, batch_size: int = 32) -> dict[str, np.ndarray]:
        """Every output of the graph on the images (one array per image input), float64, batched."""
        n = len(images[0])
        step = self.batch or batch_size
        out: dict[str, list[np.ndarray]] = {k: [] for k in self.outputs}
        for i in range(0, n, step):
            chunk = [self.prepare(x[i:i + step]) for x in images]
            m = len(chunk[0])
            if self.batch and m < self.batch:  # a fixed-batch graph: pad with the last image, drop after
                chunk = [np.concatenate([c, np.repeat(c[-1:], self.batch - m, 0)]) for c in chunk]
            try:
                got = self.session.run(list(self.outputs), dict(zip(self.inputs, chunk)))
            except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
                raise UserError(f"{self.path}: onnxruntime failed on a batch of {tuple(chunk[0].shape)} "
                                f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
            for k, v in zip(self.outputs, got):
                out[k].append(np.asarray(v, dtype=np.float64)[:m])
        return {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in out.items()}


def _per_image(path: Path, what: str, arr: np.ndarray, rank: int) -> np.ndarray:
    """(N, ...) -> (N,) or (N, D): trailing singleton axes dropped (pool3's (N, D, 1, 1))."""
    trailing = arr.shape[rank:]
    if any(s != 1 for s in trailing):
        raise UserError(f"{path}: output {what!r} has shape {arr.shape}, expected rank {rank} "
                        f"(trailing axes of size 1 are dropped)")
    return arr.reshape(arr.shape[:rank])


def load_image_net(path: str | Path, role: str) -> OnnxImageNet:
    """Open ``path`` as the ``role`` network ("feature", "lpips" or "classifier"), or a one-line UserError."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError(f"{path}: ONNX image networks need onnxruntime (pip install onnxruntime)") from None
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {role} network file does not exist")
    data = path.read_bytes()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception types (Fail, InvalidProtobuf, ...)
        raise UserError(f"{path}: not a loadable ONNX model ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200]})") from None
    meta = dict(sess.get_modelmeta().custom_metadata_map)
    rng = meta.get(RANGE_KEY, "-1,1").replace(" ", "")
    if rng not in INPUT_RANGES:
        raise UserError(f"{path}: metadata {RANGE_KEY}={meta[RANGE_KEY]!r}, expected one of {sorted(INPUT_RANGES)}")
    name = re.sub(r"[^A-Za-z0-9.-]+", "-", meta.get(NAME_KEY, "") or path.stem).strip("-")
    if not name or name == "domain":
        raise UserError(f"{path}: network name {name!r} is not usable (set metadata {NAME_KEY})")
    ins = sess.get_inputs()
    want = 2 if role == "lpips" else 1
    if len(ins) != want:
        raise UserError(f"{path}: a {role} network takes {want} image input(s), the graph has {len(ins)} "
                        f"({', '.join(a.name for a in ins)})")
    for a in ins:
        if len(a.shape) != 4 or a.type != "tensor(float)":
            raise UserError(f"{path}: input {a.name!r} is {a.type} of rank {len(a.shape)}, expected float images "
                            "(N, 3, H, W)")
    shape = ins[0].shape
    if any(list(a.shape) != list(shape) for a in ins):
        raise UserError(f"{path}: the two image inputs differ in shape ({', '.join(str(a.shape) for a in ins)})")
    outs = {o.name: len(o.shape) for o in sess.get_outputs()}
    need = {"feature": ("features",), "classifier": ("logits",), "lpips": ()}[role]
    for k in need:
        if k not in outs:
            raise UserError(f"{path}: a {role} network needs an output named {k!r} (graph outputs: "
                            f"{', '.join(sorted(outs))})")
    if role == "feature":
        outs = {k: r for k, r in outs.items() if k in ("features", "logits")}
    elif role == "classifier":
        outs = {"logits": outs["logits"]}
    else:
        outs = {next(iter(outs)): outs[next(iter(outs))]}
    h, w = _static(shape[2]), _static(shape[3])
    return OnnxImageNet(path=path, name=name, sha256=hashlib.sha256(data).hexdigest(), input_range=rng, session=sess,
                        inputs=[a.name for a in ins], outputs=outs, channels=_static(shape[1]),
                        size=(h, w) if h and w else None, batch=_static(shape[0]))


def read_class_map(path: str | Path) -> dict[str, int]:
    """A JSON object {class name: logit index}, or a one-line UserError."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: class map file does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a JSON file ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(data, dict) or not data or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in data.values()):
        raise UserError(f"{path}: expected a JSON object {{\"<class name>\": <logit index >= 0>, ...}}")
    return data


@dataclasses.dataclass
class StandardNets:
    """The optional standard networks of one evaluation; :meth:`per_trial` gives score_set's arrays."""

    feature: OnnxImageNet | None = None
    lpips: OnnxImageNet | None = None
    classifier: OnnxImageNet | None = None
    class_map: dict[str, int] | None = None
    class_map_file: str = ""
    class_index: np.ndarray | None = None  # (n_classes,) logit of each data-set class, set by bind()

    @classmethod
    def load(cls, feature_net: str | Path | None = None, lpips_net: str | Path | None = None,
             classifier_net: str | Path | None = None, classifier_classes: str | Path | None = None) -> StandardNets:
        """Open the given files (each optional); checks everything that does not need the data set."""
        if classifier_classes is not None and classifier_net is None:
            raise UserError(f"{classifier_classes}: a class map needs a classifier network (--classifier-net)")
        return cls(feature=load_image_net(feature_net, "feature") if feature_net is not None else None,
                   lpips=load_image_net(lpips_net, "lpips") if lpips_net is not None else None,
                   classifier=load_image_net(classifier_net, "classifier") if classifier_net is not None else None,
                   class_map=read_class_map(classifier_classes) if classifier_classes is not None else None,
                   class_map_file=str(classifier_classes or ""))

    def __bool__(self) -> bool:
        return any(n is not None for n in (self.feature, self.lpips, self.classifier))

    def bind(self, classes: list[str], sample: np.ndarray) -> StandardNets:
        """Map the data set's ``classes`` to the classifier's logits (``sample``: one image, to learn K)."""
        c = self.classifier
        if c is None:
            return self
        k = int(c.run(sample[:1])["logits"].reshape(1, -1).shape[1])
        where = self.class_map_file or str(c.path)
        if self.class_map is None:
            if k != len(classes):
                raise UserError(f"{c.path}: {k} logits for {len(classes)} classes; give a class map "
                                "(--classifier-classes FILE.json: {\"<class name>\": <logit index>, ...})")
            idx = list(range(k))
        else:
            missing = [n for n in classes if n not in self.class_map]
            if missing:
                raise UserError(f"{where}: class map lacks {len(missing)} of the data set's {len(classes)} classes "
                                f"(first: {missing[0]!r})")
            idx = [self.class_map[n] for n in classes]
            if max(idx) >= k:
                raise UserError(f"{where}: logit index {max(idx)} is outside the classifier's {k} logits")
            if len(set(idx)) != len(idx):
                raise UserError(f"{where}: two classes share one logit index")
        self.class_index = np.asarray(idx, np.int64)
        return self

    def outputs(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Per-image arrays: ``features`` (N, D) and ``probs`` (N, K) of the feature network, ``pred`` (N,) the
        classifier's data-set class (argmax over the mapped logits)."""
        out: dict[str, np.ndarray] = {}
        if self.feature is not None:
            r = self.feature.run(images)
            out["features"] = _per_image(self.feature.path, "features", r["features"], 2)
            if "logits" in r:
                lg = torch.from_numpy(_per_image(self.feature.path, "logits", r["logits"], 2))
                out["probs"] = F.softmax(lg, dim=1).numpy()
        if self.classifier is not None:
            if self.class_index is None:
                raise UserError(f"{self.classifier.path}: classifier not bound to the data set's classes")
            lg = _per_image(self.classifier.path, "logits", self.classifier.run(images)["logits"], 2)
            out["pred"] = lg[:, self.class_index].argmax(1)
        return out

    def per_trial(self, images: np.ndarray, truth: np.ndarray, labels: np.ndarray,
                  real: dict[str, np.ndarray] | None = None) -> dict[str, tuple[np.ndarray, ...]]:
        """score_set's ``std``: metric name -> per-trial arrays (first axis: the trial).

        ``fid_<n>``: (generated features, ground-truth features); ``is_<n>``: (probs,);
        ``lpips_<n>``: (distance,); ``acc_<n>``: (correct,). ``real``: :meth:`outputs` of ``truth``
        (computed once per evaluation; recomputed when None)."""
        gen = self.outputs(images)
        out: dict[str, tuple[np.ndarray, ...]] = {}
        if self.feature is not None:
            real = real if real is not None else self.outputs(truth)
            out[f"fid_{self.feature.name}"] = (gen["features"], real["features"])
            if "probs" in gen:
                out[f"is_{self.feature.name}"] = (gen["probs"],)
        if self.lpips is not None:
            r = self.lpips.run(images, truth)
            d = next(iter(r.values()))
            out[f"lpips_{self.lpips.name}"] = (_per_image(self.lpips.path, "distance", d, 1),)
        if self.classifier is not None:
            out[f"acc_{self.classifier.name}"] = ((gen["pred"] == labels).astype(np.float64),)
        return out

    def networks(self) -> dict[str, dict[str, Any]]:
        """Metric-name prefix -> the network's record (file, sha256, input), for metrics.json and the table."""
        out: dict[str, dict[str, Any]] = {}
        if self.feature is not None:
            keys = [f"fid_{self.feature.name}"] + ([f"is_{self.feature.name}"] if "logits" in self.feature.outputs
                                                     else [])
            out["feature"] = {"name": self.feature.name, "metrics": keys, **self.feature.describe()}
        if self.lpips is not None:
            out["lpips"] = {"name": self.lpips.name, "metrics": [f"lpips_{self.lpips.name}"], **self.lpips.describe()}
        if self.classifier is not None:
            out["classifier"] = {"name": self.classifier.name, "metrics": [f"acc_{self.classifier.name}"],
                                 "class_map": self.class_map_file or "identity (logit i = class i)",
                                 **self.classifier.describe()}
        return out


__all__ = ["OnnxImageNet", "StandardNets", "load_image_net", "read_class_map", "INPUT_RANGES"]
