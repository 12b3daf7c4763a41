"""Writes tests/fixtures/torchvision/<experiment>.npz: torchvision's logits for each experiment.

tests/test_torchvision.py loads the same seeded weights into the Keras model
and compares its logits with these, so CI checks the architecture against
torchvision without PyTorch. Needs PyTorch and torchvision, which the package
and CI do not; run it once (and again whenever an experiment's architecture
changes), with torch in its own virtual environment:

    python -m venv /path/to/tv
    /path/to/tv/bin/pip install torch==2.14.1 torchvision==0.29.1 numpy
    python tools/torchvision_fixtures.py --torch-python /path/to/tv/bin/python

This repository's Python (with Keras) reads the experiment configs and hands
them as JSON to a worker, this file run by the torch Python with `--worker`,
which imports only torch, torchvision and NumPy. For each experiment the
worker starts from `torchvision.models.squeezenet1_0(num_classes=...)` (or
`squeezenet1_1` when 1.0 cannot give the config, e.g. for `v1_1`) and applies
the config's changes to torchvision's own modules: conv1 replaced, the
`MaxPool2d(ceil_mode=True)` kernels and strides set, pools and Fire modules
removed, the dropout rate set. It checks that the result has exactly the
config's layout, sets the weights of `tests/torchvision_reference.py` and
stores the eval-mode logits of a seeded batch. Experiments that cannot be
reached from torchvision that way are skipped with the reason.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "torchvision"
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402

from torchvision_reference import (  # noqa: E402
    BATCH, SEED, TORCHVISION_FIELDS, checksum, model_spec, reference_inputs, reference_weights,
)

BASES = ("squeezenet1_0", "squeezenet1_1")
INPUT_SIZE = 32  # the Keras models' default input (32, 32, 3)


# --- main process: this repository's Python -------------------------------------------------

def experiment_specs() -> list[dict]:
    """Every registered experiment's architecture as JSON data (imports Keras, not torch)."""
    from squeeze_keras import experiments

    specs = []
    for name in experiments.names():
        config = experiments.get(name)
        specs.append({"name": name, "classes": config.classes, "model": model_spec(config.model)})
    return specs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-python", default=sys.executable,
                        help="a Python with torch and torchvision. Defaults to this one.")
    parser.add_argument("--experiments", nargs="*", help="subset of the registered experiments")
    parser.add_argument("--out", type=pathlib.Path, default=OUT)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker()
    specs = experiment_specs()
    if args.experiments:
        unknown = sorted(set(args.experiments) - {s["name"] for s in specs})
        if unknown:
            parser.error(f"unknown experiments {unknown}; known: {[s['name'] for s in specs]}")
        specs = [s for s in specs if s["name"] in args.experiments]
    args.out.mkdir(parents=True, exist_ok=True)
    request = json.dumps({"experiments": specs, "out": str(args.out.resolve())}, default=repr)
    done = subprocess.run([args.torch_python, __file__, "--worker"], input=request, text=True,
                          stdout=subprocess.PIPE, check=True)
    for line in done.stdout.splitlines():
        print(line)


# --- worker process: the torch Python ------------------------------------------------------

class Unsupported(Exception):
    """The config needs a change this tool does not make to torchvision's model."""


def layout(model):
    """torchvision SqueezeNet `features` named like the Keras layers: conv1, fire2, fire3, ...

    Returns `(kind, name, module)` per module; a pool is named after the layer it follows.
    """
    import torch
    from torchvision.models.squeezenet import Fire

    named, last, number = [], None, 2
    for module in model.features:
        if isinstance(module, torch.nn.Conv2d) and last is None:
            last = "conv1"
            named.append(("conv", last, module))
        elif isinstance(module, Fire):
            last = f"fire{number}"
            number += 1
            named.append(("fire", last, module))
        elif isinstance(module, torch.nn.MaxPool2d):
            named.append(("pool", last, module))
        elif isinstance(module, torch.nn.ReLU):
            named.append(("relu", last, module))
        else:
            raise Unsupported(f"unexpected module {module} in torchvision's `features`")
    return named


def fire_spec(module):
    return [module.squeeze.out_channels, module.expand1x1.out_channels,
            module.expand3x3.out_channels]


def apply_changes(model, m):
    """Changes torchvision's `model` in place into the config `m` (a `model_spec` dict).

    Returns `(kind, name)` for each module of the new `model.features`.
    """
    import torch

    named = layout(model)
    fires = {name: module for kind, name, module in named if kind == "fire"}
    wanted = [name for name, _ in m["fires"]]
    if [name for name in fires if name in wanted] != wanted:
        raise Unsupported(f"fires {wanted} are not a subsequence of torchvision's {list(fires)}")
    for name, spec in m["fires"]:
        if list(spec) != fire_spec(fires[name]):
            raise Unsupported(f"{name} is {spec}, torchvision's is {fire_spec(fires[name])}")
    pools = [name for kind, name, _ in named if kind == "pool"]
    if not set(m["pool_after"]) <= set(pools):
        raise Unsupported(f"pools after {m['pool_after']}; torchvision pools after {pools} only")

    kept = []
    for kind, name, module in named:
        if kind == "conv" and (module.out_channels, module.kernel_size, module.stride,
                               module.padding) != (m["conv1_filters"], (m["conv1_kernel"],) * 2,
                                                   (m["conv1_strides"],) * 2,
                                                   (m["conv1_padding"],) * 2):
            module = torch.nn.Conv2d(3, m["conv1_filters"], m["conv1_kernel"],
                                     m["conv1_strides"], m["conv1_padding"])
        elif kind == "fire" and name not in wanted:
            continue  # e.g. E3: Fire3 removed
        elif kind == "pool":
            if name not in m["pool_after"]:
                continue  # e.g. E4: maxpool1 removed
            # torchvision's own MaxPool2d(ceil_mode=True), only its window changed.
            assert module.ceil_mode and module.padding == 0 and module.dilation == 1, module
            module.kernel_size, module.stride = m["pool_size"], m["pool_strides"]
        kept.append((kind, name, module))
    model.features = torch.nn.Sequential(*(module for _, _, module in kept))
    model.classifier[0].p = m["dropout"]

    channels = 3  # a removed module must leave the channels chained
    for kind, name, module in kept:
        if kind in ("conv", "fire"):
            inplanes = module.in_channels if kind == "conv" else module.inplanes
            if inplanes != channels:
                raise Unsupported(f"{name} expects {inplanes} input channels, gets {channels}")
            channels = module.out_channels if kind == "conv" else sum(fire_spec(module)[1:])
    if model.classifier[1].in_channels != channels:
        raise Unsupported(f"conv10 expects {model.classifier[1].in_channels} channels, "
                          f"gets {channels}")
    return [(kind, name) for kind, name, _ in kept]


def describe(model, names):
    """The architecture of a (changed) torchvision model, read off its modules, as config fields."""
    modules = list(zip(names, model.features))
    conv = modules[0][1]
    pools = [module for (kind, _), module in modules if kind == "pool"]
    if len({(p.kernel_size, p.stride) for p in pools}) > 1:
        raise Unsupported("pools of different sizes")
    spec = {
        "conv1_filters": conv.out_channels, "conv1_kernel": conv.kernel_size[0],
        "conv1_strides": conv.stride[0], "conv1_padding": conv.padding[0],
        "pool_after": [name for (kind, name), _ in modules if kind == "pool"],
        "fires": [[name, fire_spec(module)] for (kind, name), module in modules if kind == "fire"],
        "dropout": model.classifier[0].p,
    }
    if pools:
        spec.update(pool_size=pools[0].kernel_size, pool_strides=pools[0].stride)
    return spec


def build(spec):
    """torchvision's SqueezeNet with the experiment's changes, its base model's name, layer names."""
    import torchvision

    m = spec["model"]
    unknown = sorted(set(m) - set(TORCHVISION_FIELDS))  # fields away from their defaults
    if unknown:
        raise Unsupported(f"config fields {unknown} have no torchvision counterpart here")
    reasons = []
    for base in BASES:
        model = getattr(torchvision.models, base)(num_classes=spec["classes"])
        try:
            names = apply_changes(model, m)
        except Unsupported as error:
            reasons.append(f"{base}: {error}")
            continue
        got = describe(model, names)
        want = {k: m[k] for k in got}
        # `pool_after` is a set of names; compare it in layer order.
        order = [name for _, name in names]
        want["pool_after"] = sorted(want["pool_after"], key=order.index)
        if got != want:
            raise AssertionError(f"{spec['name']}: built {got}, the config is {want}")
        return base, model, names
    raise Unsupported("; ".join(reasons))


def fixture(spec, out):
    import torch

    base, model, names = build(spec)
    model.eval()
    state = model.state_dict()
    names_shapes = [(name, list(t.shape)) for name, t in state.items()]
    weights = reference_weights(names_shapes)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    x = reference_inputs((BATCH, 3, INPUT_SIZE, INPUT_SIZE))

    pools = []

    def record(module, inputs, output):
        size, k, s = inputs[0].shape[-1], module.kernel_size, module.stride
        pools.append({"in": size, "out": output.shape[-1], "kernel": k, "stride": s,
                      "ceil_used": output.shape[-1] != (size - k) // s + 1})

    for module in model.features:
        if isinstance(module, torch.nn.MaxPool2d):
            module.register_forward_hook(record)
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    scale = float(np.abs(logits).max())
    spread = float(logits.std(axis=0).mean())  # across images, per class
    alive = float((logits > 0).mean())
    if not np.isfinite(logits).all() or scale == 0 or spread < 1e-3 * scale or alive < 0.25:
        raise AssertionError(f"{spec['name']}: degenerate logits (max {scale}, spread across "
                             f"images {spread}, positive fraction {alive})")
    feature_names = [[f"features.{i}", type(module).__name__, name]
                     for i, ((kind, name), module) in enumerate(zip(names, model.features))
                     if kind != "relu"]
    import torchvision

    meta = {
        "experiment": spec["name"], "torchvision_model": base, "classes": spec["classes"],
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "seed": SEED, "input_nchw": list(x.shape), "model_spec": spec["model"],
        "state_dict": names_shapes, "features": feature_names, "pools": pools,
        "weights_checksum": checksum(weights.values()), "inputs_checksum": checksum([x]),
        "logit_max_abs": scale, "logit_spread_across_images": spread,
        "logit_positive_fraction": alive,
    }
    path = pathlib.Path(out) / f"{spec['name']}.npz"
    np.savez_compressed(path, logits=logits.astype(np.float32), meta=np.array(json.dumps(meta)))
    return path, meta


def worker():
    import torch

    torch.set_num_threads(1)
    request = json.loads(sys.stdin.read())
    for spec in request["experiments"]:
        try:
            path, meta = fixture(spec, request["out"])
        except Unsupported as error:
            print(f"{spec['name']}: skipped ({error})", flush=True)
            continue
        ceil = sum(p["ceil_used"] for p in meta["pools"])
        print(f"{spec['name']}: {path.name} ({path.stat().st_size} bytes) from "
              f"{meta['torchvision_model']}, {len(meta['state_dict'])} tensors, "
              f"{ceil} ceil-mode pool(s), max |logit| {meta['logit_max_abs']:.4g}, "
              f"positive {meta['logit_positive_fraction']:.0%}", flush=True)


if __name__ == "__main__":
    main()
