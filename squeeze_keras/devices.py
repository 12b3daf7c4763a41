"""What the machine offers for training: accelerators, precision policy, strategy, compile cache.

Every question about the hardware is asked here and nowhere else, so that a
run folder's `metrics.json` and the choice of precision agree.
"""

from __future__ import annotations

import functools
import glob
import importlib
import os
import pathlib
import platform

import keras

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
CACHE_ENV = "SQUEEZE_KERAS_CACHE"


@functools.cache
def cpuinfo_text() -> str:
    """The text of `/proc/cpuinfo`, or `""` where there is none (macOS, Windows)."""
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's model name, with its family, model and widest vector instructions.

    Cloud CPUs often report a bare name ("AMD EPYC") for chips that train at
    very different speeds (a Zen 3 EPYC takes about twice as long as a Zen 4
    one), so `/proc/cpuinfo`'s family and model numbers and the widest of
    AVX2, AVX-512 and AVX-512 BF16 are added: seconds per epoch are only
    compared between runs whose hardware line agrees. "AMX" is added where the
    CPU has AMX matrix units for bfloat16 (`amx_bf16` and `amx_tile`), which
    make `mixed_bfloat16` about twice as fast as float32 (`select_precision`).
    """
    text = cpuinfo_text()
    return describe_cpuinfo(text) if text else platform.processor() or "CPU"


def describe_cpuinfo(text: str) -> str:
    """`cpu_model`'s line for the text of a `/proc/cpuinfo` (its first processor)."""
    fields = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or "CPU"
    details = []
    if "cpu family" in fields and "model" in fields:
        details.append(f"family {fields['cpu family']} model {fields['model']}")
    flags = set(fields.get("flags", "").split())
    widest = next((label for flag, label in (("avx512_bf16", "AVX-512 BF16"), ("avx512f", "AVX-512"),
                                             ("avx2", "AVX2")) if flag in flags), None)
    if widest:
        details.append(widest)
    if has_amx_bf16(flags):
        details.append("AMX")
    return f"{name} ({', '.join(details)})" if details else name


def cpu_flags(text: str | None = None) -> set[str]:
    """The instruction-set flags of the first processor in `/proc/cpuinfo` (or in `text`)."""
    if text is None:
        text = cpuinfo_text()
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def has_amx_bf16(flags: set[str]) -> bool:
    """Whether a CPU with these flags has AMX tiles that multiply bfloat16."""
    return {"amx_bf16", "amx_tile"} <= flags


def cpu_precision(flags: set[str], backend: str, onednn: bool) -> str:
    """`auto`'s choice on a CPU with `flags`, training under `backend` (oneDNN on or off).

    `mixed_bfloat16` where the CPU has AMX for bfloat16 and TensorFlow runs its
    oneDNN kernels, which use AMX; `float32` everywhere else. Measured on a
    2-core Intel Xeon with AMX (family 6 model 167), E4 trained at 219-247
    img/s in `mixed_bfloat16` against 95-116 in float32, the baseline at
    1,217-1,470 against 1,060-1,260 (batch 64, windows interleaved;
    `benchmarks/README.md`). Without AMX, bfloat16 is slower: on a
    2-core Xeon with AVX-512 BF16 but no AMX, E4 trained at 93-94 img/s against
    122-126 in float32, and on AVX2 CPUs bfloat16 is emulated (4 against 35).
    Keras on JAX (0.10.2) trained E4 on that Xeon at 31-33 img/s in float32 and
    29 in bf16: XLA's CPU code gains nothing from bf16, so JAX keeps float32, and
    so does PyTorch's backend, whose bf16 path here is not measured through Keras.
    """
    if backend == "tensorflow" and onednn and has_amx_bf16(flags):
        return "mixed_bfloat16"
    return "float32"


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN kernels: `TF_ENABLE_ONEDNN_OPTS` unless it says 0.

    The command line and the notebooks' set-up cell set it to 1 before importing
    TensorFlow; TensorFlow's own default is on for the x86 CPUs that have AMX.
    """
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() not in ("0", "false")


def accelerators() -> list[tuple[str, tuple[int, int] | None]]:
    """`(name, compute capability)` of each GPU/TPU the Keras backend sees; `[]` on a CPU.

    The compute capability is `(major, minor)` for NVIDIA GPUs and `None` where
    the backend does not report one (TPUs).
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        found = []
        for gpu in tf.config.list_physical_devices("GPU"):
            details = tf.config.experimental.get_device_details(gpu)
            found.append((details.get("device_name", "GPU"), details.get("compute_capability")))
        return found + [(d.name, None) for d in tf.config.list_logical_devices("TPU")]
    if backend == "jax":
        import jax

        found = []
        for device in jax.devices():
            if device.platform == "cpu":
                continue
            capability = getattr(device, "compute_capability", None)
            if capability:
                capability = tuple(int(p) for p in str(capability).split(".")[:2])
            found.append((device.device_kind, capability or None))
        return found
    if backend == "torch":
        import torch

        return [(torch.cuda.get_device_name(i), torch.cuda.get_device_capability(i))
                for i in range(torch.cuda.device_count())]
    return []


def select_precision(policy: str = "auto") -> str:
    """The Keras dtype policy to train under on this machine, unless `policy` names one.

    `auto`: `mixed_bfloat16` on TPUs and on GPUs with bfloat16 arithmetic
    (NVIDIA compute capability 8.0 and up), `mixed_float16` on older GPUs; on
    CPUs `mixed_bfloat16` where the CPU has AMX for bfloat16 and TensorFlow's
    oneDNN kernels are on (E4 about 2x faster there), else `float32`, the faster
    choice even where the CPU has AVX-512 BF16 without AMX (`cpu_precision`).
    """
    if policy not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}. Received: precision={policy!r}")
    if policy != "auto":
        return policy
    devices = accelerators()
    if not devices:
        return cpu_precision(cpu_flags(), keras.backend.backend(), onednn_enabled())
    if all(capability is None or capability >= (8, 0) for _, capability in devices):
        return "mixed_bfloat16"
    return "mixed_float16"


def hardware() -> str:
    """A one-line description of the accelerator or CPU that trains."""
    devices = accelerators()
    if devices:
        return f"{len(devices)}x {devices[0][0]}"
    return f"{cpu_model()}, {os.cpu_count()} cores (CPU)"


def backend_version() -> dict:
    """The Keras backend and its version, for `metrics.json`."""
    backend = keras.backend.backend()
    module = importlib.import_module(backend) if backend in ("tensorflow", "jax", "torch") else None
    return {"backend": backend, backend: getattr(module, "__version__", "?")}


def default_steps_per_execution() -> int:
    """Training steps per compiled call: 1 on CPUs, 32 where a GPU or TPU is visible.

    A batch of CIFAR images is a few milliseconds of GPU work, about what one
    trip from Python to the device costs, so on accelerators several steps run
    per call; on a CPU a step takes tens of milliseconds and gains nothing.
    """
    return 32 if accelerators() else 1


def distribution_strategy():
    """TPU strategy on a Colab TPU, `MirroredStrategy` on several GPUs, else the default.

    With N replicas, training feeds global batches of N x the protocol's batch
    size and scales the learning rate by N (the linear scaling rule). Under the
    JAX and PyTorch backends there is no `tf.distribute`: returns `None`.
    """
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    # Only look for a TPU where one can be: the resolver would otherwise query
    # cloud metadata servers.
    if os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_NAME") or glob.glob("/dev/accel*"):
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            return tf.distribute.TPUStrategy(resolver)
        except (ValueError, tf.errors.NotFoundError, RuntimeError):
            pass
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def cache_dir() -> pathlib.Path:
    """The package's cache folder: `$SQUEEZE_KERAS_CACHE`, else `~/.cache/squeeze_keras`."""
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "squeeze_keras")
    return pathlib.Path(base)


def enable_compilation_cache() -> pathlib.Path | None:
    """Turns on JAX's persistent compilation cache (under JAX only); returns its folder.

    XLA compiles the training step of a SqueezeNet in tens of seconds on a GPU;
    with the cache, a second run of the same shapes (another seed, a resumed
    run) loads the compiled program instead. `JAX_COMPILATION_CACHE_DIR`, if
    set, wins; else `cache_dir() / "jax"`. Never inside the repository.
    """
    if keras.backend.backend() != "jax":
        return None
    import jax

    folder = pathlib.Path(os.environ.get("JAX_COMPILATION_CACHE_DIR") or cache_dir() / "jax")
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return folder
