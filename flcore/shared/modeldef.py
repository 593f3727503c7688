"""Models as data: a job names a preset or carries a list of layers, checked here without torch.

A layer list is the safe form of "task code downloaded over the air": clients
build it with torch (:mod:`fllocal.models`), the function derives every tensor's
name and shape from it (:attr:`ModelDef.spec`) and validates each update against
them, and no code travels. New architectures need no redeploy of either side.

Layers (``type`` and its fields; ``name`` is optional, unique, and becomes the
tensors' prefix as torch names them):

- ``conv2d``: ``out``, ``kernel``, ``stride`` (1), ``padding`` (0), ``bias`` (true)
- ``batchnorm2d``: weight, bias and the running mean and variance, which are part
  of the model and averaged like the weights; torch's integer ``num_batches_tracked``
  is not (it only matters without momentum, which these layers never use), so it
  never travels and every client keeps its own
- ``relu``, ``flatten``, ``dropout`` (``p``)
- ``maxpool2d``, ``avgpool2d``: ``kernel``, ``stride`` (= kernel); ``global: true`` pools to 1x1
- ``linear`` (or ``dense``): ``out``, ``bias`` (true); a tabular job's last linear layer may leave ``out``
  out: it is then the task's size (one value, or one per class)
- ``residual``: ``out``, ``stride`` (1): ResNet's basic block, two 3x3 conv+batchnorm
  with a ReLU between, plus the input (through a 1x1 conv+batchnorm when the shape changes), then ReLU

Shapes must chain from the data set's input to one output per class (for a tabular
job, from the encoded row's width to the task's outputs; presets ``linear`` and ``mlp``).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass

from flcore.errors import Invalid
from flcore.shared.checks import is_int, is_number
from flcore.shared.datasets import DATASET_MODELS, INPUT_SHAPES

CLASSES = 10
# how devices compute a model's forward pass while training (clients/trainer.py); auto: bfloat16 for
# image models on processors with bfloat16 instructions, float32 elsewhere
TRAIN_PRECISIONS = ("auto", "float32", "bfloat16")
MAX_LAYERS = 64
MAX_WIDTH = 4096  # channels or features of one layer
MAX_PARAMETERS = 60_000_000  # 240 MB of float32: aggregation holds a few of these
MAX_ACTIVATION = 4_000_000  # values per example between two layers
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

# field -> (lowest, highest, default); None as default: required
_INT_FIELDS = {"out": (1, MAX_WIDTH, None), "kernel": (1, 11, None), "stride": (1, 4, 1), "padding": (0, 5, 0)}
_LAYERS: dict[str, tuple[str, ...]] = {
    "conv2d": ("out", "kernel", "stride", "padding", "bias"),
    "batchnorm2d": (),
    "relu": (),
    "flatten": (),
    "dropout": ("p",),
    "maxpool2d": ("global", "kernel", "stride"),  # global first: the kernel's default depends on it
    "avgpool2d": ("global", "kernel", "stride"),
    "linear": ("out", "bias"),
    "residual": ("out", "stride"),
}


def _cnn(hidden: int = 64) -> list[dict]:
    """The two-convolution CNN the project started with; same names, same initialisation order."""
    return [
        {"type": "conv2d", "name": "conv1", "out": 16, "kernel": 5},
        {"type": "relu"},
        {"type": "maxpool2d", "kernel": 2},
        {"type": "conv2d", "name": "conv2", "out": 32, "kernel": 5},
        {"type": "relu"},
        {"type": "maxpool2d", "kernel": 2},
        {"type": "flatten"},
        {"type": "linear", "name": "fc1", "out": hidden},
        {"type": "relu"},
        {"type": "linear", "name": "fc2", "out": CLASSES},
    ]


def _resnet18() -> list[dict]:
    """CIFAR-style ResNet-18 (3x3 stem, no stem pooling): about 11.2 M parameters."""
    stem = [
        {"type": "conv2d", "name": "conv1", "out": 64, "kernel": 3, "padding": 1, "bias": False},
        {"type": "batchnorm2d", "name": "bn1"},
        {"type": "relu"},
    ]
    blocks = []
    for stage, (width, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), start=1):
        blocks += [
            {"type": "residual", "name": f"layer{stage}_0", "out": width, "stride": stride},
            {"type": "residual", "name": f"layer{stage}_1", "out": width},
        ]
    head = [
        {"type": "avgpool2d", "global": True},
        {"type": "flatten"},
        {"type": "linear", "name": "fc", "out": CLASSES},
    ]
    return stem + blocks + head


def _mlp(hidden: int = 64) -> list[dict]:
    """Two hidden layers for tabular data: enough for a few hundred encoded columns."""
    return [
        {"type": "linear", "name": "fc1", "out": hidden},
        {"type": "relu"},
        {"type": "linear", "name": "fc2", "out": hidden},
        {"type": "relu"},
        {"type": "linear", "name": "out"},
    ]


# Measured on one core here: the CNN is as fast as the classic (10, 20, 50) tutorial net
# and more accurate under FedAvg (see README, "Model"); small enough for one request.
PRESETS: dict[str, list[dict]] = {
    "cnn_mnist": _cnn(),
    "cnn_cifar10": _cnn(),
    "resnet18": _resnet18(),
    "linear": [{"type": "linear", "name": "out"}],  # tabular: a linear (or logistic) model
    "mlp": _mlp(),
}
TABULAR_PRESETS = ("linear", "mlp")  # for encoded rows, not images
TABULAR_MODEL = "mlp"  # what a tabular job gets when it names none


@dataclass(frozen=True)
class ModelDef:
    """A checked model: its normalised layers, the input it takes, and its tensors."""

    name: str  # the preset's name, or "custom"
    layers: tuple[dict, ...]
    input_shape: tuple[int, ...]
    spec: dict[str, tuple[int, ...]]  # float32 tensors in the order torch's state_dict lists them

    @property
    def parameters(self) -> int:
        """Values in one set of weights (batchnorm running statistics included)."""
        return sum(_size(shape) for shape in self.spec.values())

    @property
    def nbytes(self) -> int:
        return 4 * self.parameters


def resolve(model: object, dataset: str) -> ModelDef:
    """The job's ``model`` (a preset name or a layer list) checked for ``dataset``; a 400 says what is wrong."""
    return resolve_shape(model, INPUT_SHAPES[dataset], CLASSES)


def for_job(model: object, dataset: str, data: dict | None = None) -> ModelDef:
    """The model of a job's settings: for a built-in data set its images, for a tabular task its
    encoded rows (``input_width`` and ``outputs`` are known once the statistics step has run; before,
    the layers are checked on a one-column row)."""
    if not data:
        return resolve(model or DATASET_MODELS[dataset], dataset)
    return resolve_shape(model or TABULAR_MODEL, (data.get("input_width") or 1,), data.get("outputs") or 1)


def resolve_shape(model: object, input_shape: tuple[int, ...], outputs: int) -> ModelDef:
    """``model`` checked for inputs of ``input_shape`` and ``outputs`` values out."""
    key = json.dumps(model, sort_keys=True) if isinstance(model, (str, list)) else None
    if key is None:
        raise Invalid(f"model must be a preset name ({', '.join(sorted(PRESETS))}) or a list of layers")
    return _resolve(key, tuple(input_shape), outputs)


@functools.lru_cache(maxsize=64)
def _resolve(key: str, input_shape: tuple[int, ...], outputs: int) -> ModelDef:
    model = json.loads(key)
    if isinstance(model, str):
        if model not in PRESETS:
            raise Invalid(f"unknown model {model!r}; presets are {sorted(PRESETS)}, or give a list of layers")
        name, raw = model, PRESETS[model]
    else:
        name, raw = "custom", model
    if not 0 < len(raw) <= MAX_LAYERS:
        raise Invalid(f"a model has 1 to {MAX_LAYERS} layers")
    raw = _sized_output(raw, outputs)
    layers = tuple(_normalise(i, layer) for i, layer in enumerate(raw))
    names = [layer["name"] for layer in layers]
    if len(set(names)) != len(names):
        raise Invalid("layer names must be unique")
    shape: tuple[int, ...] = input_shape
    spec: dict[str, tuple[int, ...]] = {}
    for i, layer in enumerate(layers):
        shape = _chain(i, layer, shape, spec)
    if shape != (outputs,):
        what = "one per class" if outputs > 1 else "the predicted value"
        raise Invalid(f"the model's output is {list(shape)}; it must be {outputs} values, {what}")
    total = sum(_size(s) for s in spec.values())
    if total > MAX_PARAMETERS:
        raise Invalid(f"the model has {total:,} parameters; at most {MAX_PARAMETERS:,} are allowed")
    return ModelDef(name, layers, input_shape, spec)


def _sized_output(raw: list, outputs: int) -> list:
    """The layers with the last linear layer's ``out`` filled in as the task's size, where left out."""
    if raw and isinstance(raw[-1], dict) and raw[-1].get("type") in ("linear", "dense") and "out" not in raw[-1]:
        return [*raw[:-1], {**raw[-1], "out": outputs}]
    return raw


def _normalise(i: int, layer: object) -> dict:
    """One layer with every field present and in range (or a 400 naming the layer)."""
    where = f"layer {i}"
    if isinstance(layer, dict) and layer.get("type") == "dense":  # the same layer by its other usual name
        layer = {**layer, "type": "linear"}
    if not isinstance(layer, dict) or layer.get("type") not in _LAYERS:
        raise Invalid(f"{where}: type must be one of {sorted(_LAYERS)}")
    kind = layer["type"]
    allowed = {"type", "name", *_LAYERS[kind]}
    unknown = sorted(set(layer) - allowed)
    if unknown:
        raise Invalid(f"{where} ({kind}) has no fields {unknown}; it takes {sorted(allowed - {'type'})}")
    name = layer.get("name", str(i))
    if not isinstance(name, str) or not (_NAME.match(name) or name == str(i)):
        raise Invalid(f"{where}: name must be a lowercase identifier of at most 32 characters")
    out: dict = {"type": kind, "name": name}
    for field in _LAYERS[kind]:
        out[field] = _field(where, kind, layer, field)
    return out


def _field(where: str, kind: str, layer: dict, field: str) -> int | float | bool:
    """One field of a layer, its default filled in, or a 400 saying what it must be."""
    if field in ("bias", "global"):
        value = layer.get(field, field == "bias")
        if not isinstance(value, bool):
            raise Invalid(f"{where} ({kind}): {field} must be true or false")
        return value
    if field == "p":
        value = layer.get("p", 0.5)
        if not is_number(value) or not 0 <= value < 1:
            raise Invalid(f"{where} (dropout): p must be a number from 0 up to 1")
        return float(value)
    lo, hi, default = _INT_FIELDS[field]
    if field == "kernel" and layer.get("global") is True:
        default = 1
    if field == "stride" and kind.endswith("pool2d"):
        default = layer.get("kernel", 1)
    value = layer.get(field, default)
    if not is_int(value) or not lo <= value <= hi:
        need = "is required" if value is None else f"must be an integer from {lo} to {hi}"
        raise Invalid(f"{where} ({kind}): {field} {need}")
    return value


def _size(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _spatial(where: str, kind: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise Invalid(
            f"{where} ({kind}) needs channels x height x width, but gets {list(shape)} "
            "(after flatten only linear, relu and dropout fit)"
        )
    return shape  # type: ignore[return-value]


def _out_side(where: str, side: int, kernel: int, stride: int, padding: int) -> int:
    out = (side + 2 * padding - kernel) // stride + 1
    if out < 1:
        raise Invalid(f"{where}: a {kernel}x{kernel} window does not fit a {side}x{side} input")
    return out


def _conv(spec: dict, prefix: str, c_in: int, c_out: int, kernel: int, bias: bool) -> None:
    spec[f"{prefix}.weight"] = (c_out, c_in, kernel, kernel)
    if bias:
        spec[f"{prefix}.bias"] = (c_out,)


def _batchnorm(spec: dict, prefix: str, channels: int) -> None:
    for tensor in ("weight", "bias", "running_mean", "running_var"):
        spec[f"{prefix}.{tensor}"] = (channels,)


def _chain(i: int, layer: dict, shape: tuple[int, ...], spec: dict) -> tuple[int, ...]:
    """The shape after ``layer``, adding its tensors to ``spec`` (torch's names and order)."""
    kind, name, where = layer["type"], layer["name"], f"layer {i}"
    if kind in ("relu", "dropout"):
        return shape
    if kind == "linear":
        if len(shape) != 1:
            raise Invalid(f"{where} (linear) needs a flat input; put a flatten before it")
        spec[f"{name}.weight"] = (layer["out"], shape[0])
        if layer["bias"]:
            spec[f"{name}.bias"] = (layer["out"],)
        return (layer["out"],)
    c, h, w = _spatial(where, kind, shape)
    if kind == "flatten":
        return (c * h * w,)
    if kind == "batchnorm2d":
        _batchnorm(spec, name, c)
        return shape
    if kind.endswith("pool2d"):
        if layer["global"]:
            return (c, 1, 1)
        return (
            c,
            _out_side(where, h, layer["kernel"], layer["stride"], 0),
            _out_side(where, w, layer["kernel"], layer["stride"], 0),
        )
    if kind == "conv2d":
        _conv(spec, name, c, layer["out"], layer["kernel"], layer["bias"])
        out = (
            layer["out"],
            _out_side(where, h, layer["kernel"], layer["stride"], layer["padding"]),
            _out_side(where, w, layer["kernel"], layer["stride"], layer["padding"]),
        )
    else:  # residual
        o, s = layer["out"], layer["stride"]
        _conv(spec, f"{name}.conv1", c, o, 3, False)
        _batchnorm(spec, f"{name}.bn1", o)
        _conv(spec, f"{name}.conv2", o, o, 3, False)
        _batchnorm(spec, f"{name}.bn2", o)
        if s != 1 or c != o:
            _conv(spec, f"{name}.shortcut.0", c, o, 1, False)
            _batchnorm(spec, f"{name}.shortcut.1", o)
        out = (o, _out_side(where, h, 3, s, 1), _out_side(where, w, 3, s, 1))
    if _size(out) > MAX_ACTIVATION:
        raise Invalid(
            f"{where} ({kind}) outputs {_size(out):,} values per example; at most {MAX_ACTIVATION:,} are allowed"
        )
    return out
