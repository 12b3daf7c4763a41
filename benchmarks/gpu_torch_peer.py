"""PyTorch side of benchmarks/gpu.py: E4 in plain PyTorch eager, data and augmentation on the GPU.

torchvision's `squeezenet1_0` with the E4 changes (conv1 2x2, stride 1, padding 1, 96
filters; maxpool1 removed; 2x2/2 ceil-mode max-pools after Fire4 and Fire8; dropout 0.5;
10 classes), trained with the `tuned2` recipe of squeeze_keras (AdamW, peak learning rate
2e-3 reached linearly from 0.1x over 2 warm-up epochs, then cosine to 0, per step; weight
decay 0.02; label smoothing 0.1; batch 128). The archive (train/<class>/*.jpg,
test/<class>/*.jpg, a .tar.gz or .tar) is decoded once with PIL, straight from the tar
stream, and kept on the device as uint8; each batch is cropped (4-pixel zero padding,
uniform offsets 0..8 per image and axis), flipped (p = 0.5) and normalised (CIFAR mean and
std) there. bf16 autocast and channels-last on GPUs with bf16. Every epoch ends with an
evaluation of the whole test split, as in the Keras run, and is timed to its end.

Needs only torch, torchvision, numpy and Pillow (no Keras). Writes one JSON object to
`--result`. Run by gpu.py; by hand:

    python benchmarks/gpu_torch_peer.py --data cifar10-jpeg.tar.gz --result peer.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import math
import os
import platform
import tarfile
import time

import numpy as np
import torch
import torchvision

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # squeeze_keras.data.CIFAR_MEAN / CIFAR_STD
CIFAR_STD = (0.2470, 0.2435, 0.2616)
PAD = 4
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def e4_model(classes: int = 10) -> torch.nn.Module:
    """torchvision's SqueezeNet 1.0 with the E4 changes (727,594 parameters for 10 classes)."""
    model = torchvision.models.squeezenet1_0(num_classes=classes, dropout=0.5)
    f = model.features
    # torchvision: conv, ReLU, pool, fire2-4, pool, fire5-8, pool, fire9.
    assert [type(m).__name__ for m in f][:3] == ["Conv2d", "ReLU", "MaxPool2d"], f
    f[0] = torch.nn.Conv2d(3, 96, kernel_size=2, stride=1, padding=1)
    f[6] = torch.nn.MaxPool2d(2, 2, ceil_mode=True)  # after fire4
    f[11] = torch.nn.MaxPool2d(2, 2, ceil_mode=True)  # after fire8
    del f[2]  # maxpool1
    return model


def decode_archive(path: str):
    """`{"train": (x, y), "test": (x, y)}` of uint8 NHWC images and int64 labels, sorted classes."""
    from PIL import Image

    blobs = {"train": [], "test": []}
    with tarfile.open(path) as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or not member.name.lower().endswith(IMAGE_SUFFIXES) \
                    or any(p.startswith(".") for p in parts):
                continue
            # <root>/split/class/file or split/class/file
            split, cls = parts[-3], parts[-2]
            if split in blobs:
                blobs[split].append((cls, member.name, tar.extractfile(member).read()))

    def decode(blob):
        with Image.open(io.BytesIO(blob)) as image:
            return np.asarray(image.convert("RGB"))

    classes = sorted({cls for cls, _, _ in blobs["train"]})
    index = {name: i for i, name in enumerate(classes)}
    out = {}
    with concurrent.futures.ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
        for split, items in blobs.items():
            items.sort(key=lambda item: item[1])
            images = np.stack(list(pool.map(decode, [b for _, _, b in items], chunksize=256)))
            out[split] = (images, np.asarray([index[c] for c, _, _ in items], np.int64))
    return out, classes


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Keras `CosineDecay(initial=0.1 * peak, warmup_target=peak, alpha=0)` over `peak`."""
    if step < warmup:
        return 0.1 + 0.9 * step / warmup
    decay = max(total - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup, decay) / decay))


class GpuAugment:
    """Pad-4 random crop, horizontal flip and normalisation of uint8 NHWC batches on the device."""

    def __init__(self, device, generator):
        self.device, self.generator = device, generator
        self.mean = torch.tensor(CIFAR_MEAN, device=device).view(1, 3, 1, 1) * 255
        self.inv_std = 1 / (torch.tensor(CIFAR_STD, device=device).view(1, 3, 1, 1) * 255)
        self.steps = torch.arange(32, device=device)

    def normalise(self, images):
        x = images.permute(0, 3, 1, 2).float()
        return ((x - self.mean) * self.inv_std).contiguous(memory_format=torch.channels_last)

    def __call__(self, images):
        n = images.shape[0]
        padded = torch.nn.functional.pad(images, (0, 0, PAD, PAD, PAD, PAD))
        offsets = torch.randint(0, 2 * PAD + 1, (n, 2), device=self.device,
                                generator=self.generator)
        flips = torch.rand(n, device=self.device, generator=self.generator) < 0.5
        rows = offsets[:, :1] + self.steps
        cols = offsets[:, 1:] + torch.where(flips[:, None], 31 - self.steps, self.steps)
        batch = torch.arange(n, device=self.device)[:, None, None]
        return self.normalise(padded[batch, rows[:, :, None], cols[:, None, :]])


def main():
    started = time.time()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a .tar.gz/.tar of train/ and test/ images")
    parser.add_argument("--result", required=True, help="JSON file to write")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--eval-batch-size", type=int, default=1000)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.02)
    parser.add_argument("--warmup-epochs", type=int, default=2)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto")
    args = parser.parse_args()

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    cuda = device.type == "cuda"
    bf16 = cuda and torch.cuda.is_bf16_supported()
    if not cuda:
        torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.benchmark = True

    t = time.time()
    arrays, classes = decode_archive(args.data)
    decode_seconds = time.time() - t
    x_train, y_train = (torch.from_numpy(a).to(device) for a in arrays["train"])
    x_test, y_test = (torch.from_numpy(a).to(device) for a in arrays["test"])
    n_train, n_test = len(y_train), len(y_test)

    model = e4_model(len(classes)).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate,
                                  weight_decay=args.weight_decay, eps=1e-7)  # Keras's epsilon
    steps = -(-n_train // args.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, args.warmup_epochs * steps, args.epochs * steps))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    generator = torch.Generator(device=device)
    generator.manual_seed(args.seed)
    augment = GpuAugment(device, generator)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def evaluate():
        model.eval()
        correct = torch.zeros((), device=device, dtype=torch.int64)
        with torch.no_grad(), autocast:
            for i in range(0, n_test, args.eval_batch_size):
                logits = model(augment.normalise(x_test[i:i + args.eval_batch_size]))
                correct += (logits.argmax(1) == y_test[i:i + args.eval_batch_size]).sum()
        return correct.item() / n_test

    epochs = []
    for epoch in range(args.epochs):
        t = time.perf_counter()
        model.train()
        order = torch.randperm(n_train, device=device, generator=generator)
        total_loss = torch.zeros((), device=device)
        for i in range(0, n_train, args.batch_size):
            idx = order[i:i + args.batch_size]
            with autocast:
                loss = loss_fn(model(augment(x_train[idx])), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.detach()
        top1 = evaluate()  # .item(): waits for the device, so the epoch is timed to its end
        seconds = time.perf_counter() - t
        epochs.append({"epoch": epoch, "seconds": seconds, "loss": total_loss.item() / steps,
                       "val_accuracy": top1})
        print(json.dumps(epochs[-1]), flush=True)

    result = {
        "side": "pytorch", "top1": round(100 * top1, 2), "epochs": epochs,
        "decode_seconds": decode_seconds, "train_size": n_train, "test_size": n_test,
        "params": sum(p.numel() for p in model.parameters()),
        "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "CPU",
        "precision": "bf16 autocast" if bf16 else "float32",
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                     "python": platform.python_version()},
        "process_seconds": time.time() - started,
    }
    with open(args.result + ".partial", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(args.result + ".partial", args.result)


if __name__ == "__main__":
    main()
