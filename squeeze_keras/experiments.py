"""Named experiments as frozen configs in a registry.

Each experiment is its parent with only what that experiment changes replaced
(`dataclasses.replace`), so the config diff *is* the experiment. `REPORT`
holds the report's experiments (baseline, E1-E5); section and table numbers
refer to the report (Chernis, Gupta, Sivanandan, "MiniProject 4: Evaluating
SqueezeNet and Exploring Variations"). `DESIGN_SPACE` holds variants from the
SqueezeNet paper's design-space exploration (Iandola et al. 2016, sections 5
and 6) built on E4: SqueezeNet 1.1, bypass connections, batch normalisation
and the squeeze-ratio and pct3x3 sweeps (`SR_SWEEP`, `PCT3X3_SWEEP`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from typing import Callable

from squeeze_keras.model import SQUEEZENET_1_1_POOLS, ModelConfig, SqueezeNet, fire_family

__all__ = [
    "DATASETS", "DESIGN_SPACE", "ExperimentConfig", "ModelConfig", "OPTIMIZERS",
    "PCT3X3_SWEEP", "PREPROCESSING", "PROTOCOLS", "Protocol", "REPORT", "SCHEDULES",
    "SR_SWEEP", "get", "names", "register",
]

# The report's experiments, in its order.
REPORT = ("baseline", "e1", "e2", "e3", "e4", "e5")
# The paper's Fig. 3 sweeps on E4's layout, {value: experiment}. E4 is the
# point SR 0.125, pct3x3 0.5 of both, so it stands for that point.
SR_SWEEP = {0.125: "e4", 0.25: "e4_sr250", 0.5: "e4_sr500", 0.75: "e4_sr750", 1.0: "e4_sr1000"}
PCT3X3_SWEEP = {0.01: "e4_pct01", 0.25: "e4_pct25", 0.5: "e4", 0.75: "e4_pct75",
                0.99: "e4_pct99"}
# Design-space variants, in plotting order (E4, their reference point, excluded).
DESIGN_SPACE = (
    "v1_1", "e4_bypass", "e4_complex_bypass", "e4_bn",
    *(name for name in SR_SWEEP.values() if name != "e4"),
    *(name for name in PCT3X3_SWEEP.values() if name != "e4"),
)

DATASETS = {"cifar10": 10, "cifar100": 100}
PREPROCESSING = ("imagenet", "cifar")
# "sgd_nesterov": SGD with Nesterov momentum 0.9.
OPTIMIZERS = ("adam", "adamw", "sgd_nesterov")
# "warmup_linear": linear warm-up to the peak, then linear decay to 0 (a one-cycle triangle).
SCHEDULES = ("constant", "warmup_cosine", "warmup_linear")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_choice(key, value, choices):
    if value not in choices:
        raise ValueError(f"`{key}` must be one of {tuple(choices)}. Received: {key}={value!r}")


def _check_positive_int(key, value, minimum=1):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"`{key}` must be {kind}. Received: {key}={value!r}")


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How a model is trained: the part of the study the report does not state.

    `paper`: plain settings of a 2020 student Colab project: Adam, constant
    learning rate 1e-4, batch 64, no schedule, weight decay or label
    smoothing. Not Adam's default 1e-3: it kills the ReLU after conv10, a
    known SqueezeNet failure (docs/faithful.md).
    `tuned`: AdamW (decoupled weight decay 0.05), batch 128, one epoch of
    linear warm-up to 5e-4 then cosine decay to 0, label smoothing 0.1; the
    same augmentation.
    `tuned2`: `tuned` with a four times higher peak learning rate (2e-3)
    reached over two warm-up epochs, and weight decay 0.02 so that the total
    decay over the schedule stays close to `tuned`'s: `tuned` under-fits
    (docs/results.md), so the step size is the lever tried.
    `sgd_onecycle`: the recipe of the proxy search (docs/recipe.md,
    `benchmarks/recipe.py`): SGD with Nesterov momentum 0.9, batch 128, a
    one-cycle triangle (linear from a tenth of the peak 0.2 to the peak over
    the first quarter of the epochs, then linear to 0), decoupled weight
    decay 5e-3 and label smoothing 0.1. It is the winning proxy's protocol
    with its one warm-up epoch of four stretched to five of twenty.

    Every field is checked on construction; an invalid one raises a
    `ValueError` naming it and the value received.
    """

    name: str = "paper"
    optimizer: str = "adam"  # one of OPTIMIZERS
    learning_rate: float = 1e-4
    batch_size: int = 64
    weight_decay: float = 0.0
    schedule: str = "constant"  # one of SCHEDULES
    warmup_epochs: int = 0  # linear warm-up of "warmup_cosine" or "warmup_linear"
    label_smoothing: float = 0.0

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"`name` must be a non-empty string. Received: name={self.name!r}")
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        if not _is_number(self.learning_rate) or not self.learning_rate > 0:
            raise ValueError(
                "`learning_rate` must be a positive number. "
                f"Received: learning_rate={self.learning_rate!r}"
            )
        _check_positive_int("batch_size", self.batch_size)
        if not _is_number(self.weight_decay) or not self.weight_decay >= 0:
            raise ValueError(
                "`weight_decay` must be a non-negative number. "
                f"Received: weight_decay={self.weight_decay!r}"
            )
        _check_positive_int("warmup_epochs", self.warmup_epochs, minimum=0)
        if self.warmup_epochs and not self.schedule.startswith("warmup_"):
            raise ValueError(
                "`warmup_epochs` needs schedule='warmup_cosine' or 'warmup_linear'. "
                f"Received: warmup_epochs={self.warmup_epochs!r}, schedule={self.schedule!r}"
            )
        if not _is_number(self.label_smoothing) or not 0 <= self.label_smoothing < 1:
            raise ValueError(
                "`label_smoothing` must be in [0, 1). "
                f"Received: label_smoothing={self.label_smoothing!r}"
            )


PROTOCOLS = {
    "paper": Protocol(),
    "tuned": Protocol(
        name="tuned", optimizer="adamw", learning_rate=5e-4, batch_size=128,
        weight_decay=0.05, schedule="warmup_cosine", warmup_epochs=1, label_smoothing=0.1,
    ),
    "tuned2": Protocol(
        name="tuned2", optimizer="adamw", learning_rate=2e-3, batch_size=128,
        weight_decay=0.02, schedule="warmup_cosine", warmup_epochs=2, label_smoothing=0.1,
    ),
    "sgd_onecycle": Protocol(
        name="sgd_onecycle", optimizer="sgd_nesterov", learning_rate=0.2, batch_size=128,
        weight_decay=5e-3, schedule="warmup_linear", warmup_epochs=5, label_smoothing=0.1,
    ),
}


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: architecture, data, preprocessing and protocol.

    Every field is checked on construction; an invalid one raises a
    `ValueError` naming it and the value received.
    """

    name: str
    description: str
    dataset: str = "cifar10"
    preprocessing: str = "imagenet"
    model: ModelConfig = ModelConfig()
    protocol: Protocol = PROTOCOLS["paper"]
    epochs: int = 20
    # The report's Table 1, for side-by-side display (never used in training).
    report_top1: float | None = None
    report_params: int | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"`name` must be a non-empty string. Received: name={self.name!r}")
        _check_choice("dataset", self.dataset, tuple(DATASETS))
        _check_choice("preprocessing", self.preprocessing, PREPROCESSING)
        if not isinstance(self.model, ModelConfig):
            raise ValueError(f"`model` must be a ModelConfig. Received: model={self.model!r}")
        if not isinstance(self.protocol, Protocol):
            raise ValueError(
                f"`protocol` must be a Protocol. Received: protocol={self.protocol!r}"
            )
        _check_positive_int("epochs", self.epochs)

    @property
    def classes(self) -> int:
        return DATASETS[self.dataset]

    def validate(self) -> "ExperimentConfig":
        """Returns self: a config is checked when it is constructed."""
        return self

    def build_model(self, **kwargs):
        """Builds this experiment's `SqueezeNet`; kwargs go to the factory and win."""
        arch = {f.name: getattr(self.model, f.name) for f in dataclasses.fields(self.model)}
        return SqueezeNet(**{"classes": self.classes, "name": f"squeezenet_{self.name}",
                             **arch, **kwargs})

    def with_protocol(self, protocol: str | Protocol) -> "ExperimentConfig":
        """The same experiment trained under another protocol (by name or value)."""
        if isinstance(protocol, str):
            if protocol not in PROTOCOLS:
                raise ValueError(
                    f"Unknown protocol {protocol!r}. Known protocols: {sorted(PROTOCOLS)}"
                )
            protocol = PROTOCOLS[protocol]
        return replace(self, protocol=protocol)


_REGISTRY: dict[str, Callable[[], ExperimentConfig]] = {}


def register(name: str):
    """Registers an experiment factory under `name`; duplicates are refused."""

    def decorator(fn):
        if name in _REGISTRY:
            raise ValueError(f"Experiment {name!r} is already registered.")
        _REGISTRY[name] = fn
        return fn

    return decorator


def names() -> list[str]:
    """Registered experiment names: `REPORT` in the report's order, then `DESIGN_SPACE`."""
    return list(_REGISTRY)


def get(name: str | ExperimentConfig) -> ExperimentConfig:
    """Returns the validated config of a registered experiment (or passes one through)."""
    if isinstance(name, ExperimentConfig):
        return name.validate()
    if name not in _REGISTRY:
        raise ValueError(f"Unknown experiment {name!r}. Known experiments: {names()}")
    return _REGISTRY[name]().validate()


@register("baseline")
def baseline() -> ExperimentConfig:
    """SqueezeNet 1.0 as published: 7x7/2 conv1, 3x3/2 max-pools, dropout 0.5 (report 4.2)."""
    return ExperimentConfig(
        name="baseline",
        description="SqueezeNet 1.0 as published (7x7/2 conv1, 3x3/2 max-pools, dropout 0.5)",
        report_top1=46.54, report_params=740_554,
    )


@register("e1")
def e1() -> ExperimentConfig:
    """E1: CIFAR-style preprocessing and max-pool kernel 3 -> 2."""
    parent = baseline()
    return replace(
        parent, name="e1",
        description="CIFAR-style preprocessing + max-pool kernel 3 -> 2",
        preprocessing="cifar", model=replace(parent.model, pool_size=2),
        report_top1=58.43, report_params=740_554,
    )


@register("e2")
def e2() -> ExperimentConfig:
    """E2: conv1 kernel 7 -> 2 (stride 1, padding 1, as Table 2 lists it)."""
    parent = e1()
    return replace(
        parent, name="e2", description="conv1 kernel 7 -> 2",
        model=replace(parent.model, conv1_kernel=2, conv1_strides=1, conv1_padding=1),
        report_top1=66.17, report_params=727_594,
    )


@register("e3")
def e3() -> ExperimentConfig:
    """E3: Fire3 removed, dropout 0.5 -> 0.3.

    Table 1 prints 715,169 parameters; removing Fire3 (12,432 parameters)
    from E2 leaves 715,162, which is what this model has.
    """
    parent = e2()
    return replace(
        parent, name="e3", description="Fire3 removed, dropout 0.5 -> 0.3",
        model=replace(
            parent.model,
            fires=tuple(f for f in parent.model.fires if f[0] != "fire3"),
            dropout=0.3,
        ),
        report_top1=69.24, report_params=715_169,
    )


@register("e4")
def e4() -> ExperimentConfig:
    """E4: maxpool1 removed, so downsampling starts after Fire4 (Table 2).

    Its parent is E2, not E3: Table 2 and the parameter count (727,594) keep
    Fire3, and the report names no dropout change, so E2's 0.5 stays.
    """
    parent = e2()
    return replace(
        parent, name="e4", description="maxpool1 removed (downsampling delayed)",
        model=replace(parent.model, pool_after=tuple(p for p in parent.model.pool_after if p != "conv1")),
        report_top1=72.05, report_params=727_594,
    )


@register("e5")
def e5() -> ExperimentConfig:
    """E5: the best model (E4) on CIFAR-100."""
    return replace(
        e4(), name="e5", description="best model (E4) on CIFAR-100", dataset="cifar100",
        report_top1=38.39, report_params=773_764,
    )


# --- The SqueezeNet paper's design space (not in the report) ---------------------


@register("v1_1")
def v1_1() -> ExperimentConfig:
    """SqueezeNet 1.1 (torchvision `squeezenet1_1`): 64 3x3/2 conv1, pools after conv1, fire3, fire5.

    Its parent is the baseline (SqueezeNet 1.0 as published, with ImageNet
    preprocessing and 3x3/2 ceil max-pools), so that the diff is only the
    1.0 -> 1.1 architecture change; both have the same Fire modules.
    """
    parent = baseline()
    return replace(
        parent, name="v1_1",
        description="SqueezeNet 1.1 (conv1 64 3x3/2, pools after conv1, fire3, fire5)",
        model=replace(parent.model, conv1_filters=64, conv1_kernel=3,
                      pool_after=SQUEEZENET_1_1_POOLS),
        report_top1=None, report_params=None,
    )


@register("e4_bypass")
def e4_bypass() -> ExperimentConfig:
    """E4 with the paper's simple bypass around Fire3, 5, 7 and 9 (no extra parameters).

    Those are the Fire modules of E4 whose input and output channels match.
    """
    parent = e4()
    return replace(
        parent, name="e4_bypass", description="E4 + simple bypass around fire3, 5, 7, 9",
        model=replace(parent.model, bypass=("fire3", "fire5", "fire7", "fire9")),
        report_top1=None, report_params=None,
    )


@register("e4_complex_bypass")
def e4_complex_bypass() -> ExperimentConfig:
    """E4 with the paper's complex bypass: a shortcut around every Fire module.

    Identity around Fire3, 5, 7 and 9; a 1x1 convolution projects the
    shortcut around Fire2, 4, 6 and 8, whose channel counts change.
    """
    parent = e4()
    return replace(
        parent, name="e4_complex_bypass",
        description="E4 + complex bypass (1x1 projections around fire2, 4, 6, 8)",
        model=replace(parent.model, bypass=tuple(name for name, _ in parent.model.fires),
                      bypass_type="complex"),
        report_top1=None, report_params=None,
    )


@register("e4_bn")
def e4_bn() -> ExperimentConfig:
    """E4 with batch normalisation after every convolution but conv10 (see `SqueezeNet`)."""
    parent = e4()
    return replace(
        parent, name="e4_bn", description="E4 + batch normalisation (conv -> BN -> ReLU)",
        model=replace(parent.model, batch_norm=True),
        report_top1=None, report_params=None,
    )


def _register_fire_family(name: str, description: str, **family):
    """Registers E4 with its Fire widths from `fire_family(**family)`."""

    @register(name)
    def factory() -> ExperimentConfig:
        parent = e4()
        return replace(
            parent, name=name, description=description,
            model=replace(parent.model, fires=fire_family(**family)),
            report_top1=None, report_params=None,
        )

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"{description} (`fire_family({family})`)."
    return factory


for _sr, _name in SR_SWEEP.items():
    if _name != "e4":
        _register_fire_family(_name, f"E4 with squeeze ratio {_sr}", sr=_sr)
for _pct, _name in PCT3X3_SWEEP.items():
    if _name != "e4":
        _register_fire_family(_name, f"E4 with {_pct:.0%} 3x3 expand filters", pct3x3=_pct)
del _sr, _pct, _name
