"""PyTorch side of benchmarks/throughput.py, in its own process.

TensorFlow and a CUDA build of PyTorch crash (segmentation fault) when both
are imported into one process, so the benchmark drives this worker over
stdin/stdout: one JSON line sets the model up (its `precision` is `float32`, or
`bfloat16` for `torch.autocast("cpu", dtype=torch.bfloat16)`, the mixed precision
a PyTorch user would pick on a CPU), then each `train N` line answers with the
images/s of N training steps. The driver warms this side up
like the Keras side: `train N` windows until two consecutive ones agree.
"""

import contextlib
import json
import os
import sys
import time

import torch
import torchvision
from torchvision.models.squeezenet import Fire


def build(spec):
    """torchvision's SqueezeNet 1.0 with the experiment's changes (same spec as the Keras config)."""
    m = spec["model"]
    layers = [torch.nn.Conv2d(3, m["conv1_filters"], m["conv1_kernel"], m["conv1_strides"],
                              m["conv1_padding"]), torch.nn.ReLU(inplace=True)]
    channels = m["conv1_filters"]

    def pool():
        return torch.nn.MaxPool2d(m["pool_size"], m["pool_strides"], ceil_mode=True)

    if "conv1" in m["pool_after"]:
        layers.append(pool())
    for name, (squeeze, e1, e3) in m["fires"]:
        layers.append(Fire(channels, squeeze, e1, e3))
        channels = e1 + e3
        if name in m["pool_after"]:
            layers.append(pool())
    classifier = torch.nn.Sequential(
        torch.nn.Dropout(m["dropout"]), torch.nn.Conv2d(channels, spec["classes"], 1),
        torch.nn.ReLU(inplace=True), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    return torch.nn.Sequential(*layers, classifier)


def main():
    torch.set_num_threads(os.cpu_count())
    spec = json.loads(sys.stdin.readline())
    model = build(spec)
    opt = torch.optim.Adam(model.parameters(), lr=spec["lr"])
    x = torch.randn(spec["batch"], 3, 32, 32)
    y = torch.randint(0, spec["classes"], (spec["batch"],))
    precision = spec.get("precision", "float32")
    if precision not in ("float32", "bfloat16"):
        raise ValueError(f"`precision` must be float32 or bfloat16. Received: precision={precision!r}")

    def autocast():
        if precision == "bfloat16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    print(json.dumps({"params": sum(p.numel() for p in model.parameters()),
                      "torch": torch.__version__, "torchvision": torchvision.__version__}),
          flush=True)
    for line in sys.stdin:
        steps = int(line.split()[1])
        model.train()
        start = time.perf_counter()
        for _ in range(steps):
            opt.zero_grad()
            with autocast():
                loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        print(steps * spec["batch"] / (time.perf_counter() - start), flush=True)


if __name__ == "__main__":
    main()
