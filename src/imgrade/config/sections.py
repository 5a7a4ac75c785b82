"""The four sections of a run's config: data, model, train and calibrate, each a dataclass.

The first paragraph of the docstring under each field is its flag's ``--help`` (imgrade.cli reads
it), and the help shows the field's default; the rest of a docstring is for readers of the code
and of YAML configs. ``__post_init__`` validates each section and names the flag to change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from imgrade.core.errors import ConfigError
from imgrade.core.registry import head_entry, head_settings, resolve_backbone


def parse_split(spec: str) -> tuple[float, float, float] | str:
    """Parse ``--split``: ``auto``, ``published`` or three fractions ``train,val,test``.

    >>> parse_split("0.6,0.2,0.2")
    (0.6, 0.2, 0.2)
    >>> parse_split("published")
    'published'
    """
    if spec in ("auto", "published"):
        return spec
    try:
        parts = tuple(float(p) for p in spec.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or any(p < 0 for p in parts) or parts[0] <= 0 or abs(sum(parts) - 1) > 1e-6:
        raise ConfigError(
            f"--split {spec!r} is not train,val,test fractions that sum to 1 (e.g. 0.6,0.2,0.2), 'auto' or 'published'"
        )
    return parts  # type: ignore[return-value]


VIEWS = ("above", "below", "side", "all")
RESIZE_MODES = ("squash", "crop", "pad")
TARGETS = ("auto", "ordinal", "continuous")
HEADS = ("auto", "reference", "linear")
CLASS_WEIGHTS = ("none", "balanced")
BN_STATS = ("epoch", "ema")
OBJECTIVES = ("qwk", "accuracy", "mae")
AMP_CHOICES = ("auto", "bf16", "off")
COMPILE_CHOICES = ("auto", "on", "off")
TRACKERS = ("tensorboard", "mlflow")
"""The closed sets of values of some fields below (the CLI offers them as choices)."""


@dataclass
class DataConfig:
    path: str | None = None
    """The image set: a CUCUMBER-9 folder or .tar.gz, a folder of class folders, or a CSV manifest."""
    grades: list[str] | None = None
    """Grade names in rank order, best first: a list, or comma-separated (2L,L,M,S); by default
    the set's own (grades.txt, or CUCUMBER-9's order)."""
    view: str = "above"
    """CUCUMBER-9 prototype 2 view: above (as the reference), below, side, or all."""
    image_size: int = 32
    """Input size in pixels: images are converted to RGB and resized to image_size x image_size."""
    resize: str = "squash"
    """How a photo that is not square becomes one: squash (the reference: the whole photo,
    stretched), crop (the centred square; the ends of the long side are lost) or pad (bands in the
    mean colour of the photo's edges; nothing lost, aspect ratio kept).

    Stored in the run, so evaluate, calibrate, predict, serve, the Python API and an exported .onnx
    file resize every photo the same way. For long items such as cucumbers, squash keeps the
    whole item but makes long ones look thicker; crop cuts the ends off (the length, often what
    the grade depends on, is lost); pad keeps both the whole item and its proportions, at the cost
    of fewer pixels across it. A square photo comes out the same in every mode."""
    split: str = "auto"
    """train,val,test fractions (stratified, seeded), e.g. 0.6,0.2,0.2; 'published' keeps the
    set's own test images; 'auto' uses a set's own train/val/test folders or CSV column when it
    has them, else 0.6,0.2,0.2."""
    target_column: str = "target"
    """CSV manifests: the column holding the target."""
    target: str = "auto"
    """CSV manifests: 'ordinal' (integer grades), 'continuous', or 'auto' (integers -> ordinal)."""
    workers: int = 0
    """Folder and CSV sets: processes decoding the photos in parallel (0: decode in this process)."""
    cache: str = "auto"
    """Folder and CSV sets: where decoded images are kept so later runs skip decoding: 'auto'
    ($IMGRADE_CACHE_DIR, else ~/.cache/imgrade), 'off', or a folder."""
    unlabeled: str | None = None
    """Photos without grades to learn from as well: a folder (read recursively), a CSV with a
    path column, or a text file listing one photo per line.

    A teacher (--teacher, else the same recipe trained first on the labelled photos, into
    OUT/teacher) grades them, and the network learns its grade probabilities on them
    (noisy student: the student sees them augmented, the teacher saw them plain). Each epoch
    is one pass over the labelled and unlabelled training photos together."""

    def __post_init__(self) -> None:
        if self.view not in VIEWS:
            raise ConfigError(f"data.view {self.view!r} is not one of above, below, side, all: set --view")
        if not 8 <= int(self.image_size) <= 1024:
            raise ConfigError(f"data.image_size {self.image_size} is outside 8..1024: set --image-size")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"data.resize {self.resize!r} is not one of squash, crop, pad: set --resize")
        if self.target not in TARGETS:
            raise ConfigError(f"data.target {self.target!r} is not auto, ordinal or continuous: set --target")
        parse_split(self.split)
        if int(self.workers) < 0:
            raise ConfigError(f"data.workers {self.workers} is negative: set --workers to 0 or more")
        if isinstance(self.grades, str):
            self.grades = [g.strip() for g in self.grades.split(",") if g.strip()]
        if self.grades is not None and len(set(self.grades)) != len(self.grades):
            twice = next(g for i, g in enumerate(self.grades) if g in self.grades[:i])
            raise ConfigError(f"--grades names {twice!r} twice: list each grade once")


@dataclass
class ModelConfig:
    depth: int = 29
    """Reference backbone: ResNet v2 depth, 9n+2 (11, 20, 29, 38, ...); 29 is the reference."""
    task: str = "regression"
    """How the grade is learned, one of the registered heads.

    regression (the reference: MSE on the grade number), classification (softmax), coral, corn
    and sord (ordinal heads), axes (a grade table), or any head added with
    ``imgrade.core.registry.register_head``; ``describe_tasks()`` there says what each does."""
    head: str = "auto"
    """The layers after the backbone: reference (Dense(8, relu) before the output, as the
    reference), linear (no hidden layer), or auto (reference for regression, linear otherwise)."""
    backbone: str = "reference"
    """The network before the head, one of the registered backbones.

    reference (the Keras ResNet v2 of the given depth), timm:NAME (any model of the optional timm
    package, e.g. timm:resnet18), or any backbone added with
    ``imgrade.core.registry.register_backbone``; ``describe_backbones()`` there says what each is."""
    pretrained: str | None = None
    """timm backbones: start from these weights, a .pth, .pt or .safetensors state dict of the same
    model, or 'hub' for timm's own download (needs the internet); efficientnet_lite0/1/2: 'imagenet'
    for the ImageNet weights of the optional extra imgrade[efficientnet] (offline), or a state dict
    file; by default random weights."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The heads' own settings by name (loss, sord_beta, axes, ...), each declared by the head that
    reads it (``register_head(settings=...)``); in config.yaml they sit in this section beside
    the fields above. Holds the task's settings, defaults included, and any other head's that
    were given (which that task ignores)."""

    def __post_init__(self) -> None:
        if self.depth < 11 or (self.depth - 2) % 9:
            raise ConfigError(
                f"model depth {self.depth} is not 9n+2 (11, 20, 29, 38, ...): set --depth to one of those"
            )
        entry = head_entry(self.task)  # unknown names fail with the closest one and the flag
        if self.head not in HEADS:
            raise ConfigError(f"model.head {self.head!r} is not auto, reference or linear: set --head")
        if self.pretrained is not None and not isinstance(self.pretrained, str):
            raise ConfigError(f"model.pretrained {self.pretrained!r} is not a file name or 'hub': set --pretrained")
        # unknown names fail with the closest one and the flag; --pretrained only where the backbone takes it
        resolve_backbone(self.backbone, self.pretrained)
        owners = head_settings()
        given = dict(self.settings or {})
        for name in given:
            if name not in owners:
                raise ConfigError(
                    f"model.{name} is no head's setting: drop it (the heads' settings: {', '.join(owners)})"
                )
        for owner in {owners[name].name: owners[name] for name in given}.values():
            owner.make_settings(given)  # each head checks its own values, the task's or not
        own = entry.make_settings(given)
        self.settings = {**(dataclasses.asdict(own) if own is not None else {}), **given}

    def head_settings(self) -> dict[str, Any]:
        """The task's own settings, by name, defaults included: what its head is built with."""
        names = head_entry(self.task).setting_names()
        return {name: value for name, value in self.settings.items() if name in names}

    def setting(self, name: str) -> Any:
        """A head setting's value: as given, else the default of the head that declares it.

        >>> ModelConfig(task="corn").setting("sord_beta")
        1.0
        """
        if name in self.settings:
            return self.settings[name]
        owners = head_settings()
        if name not in owners:
            raise KeyError(f"{name} is no head's setting")
        return getattr(owners[name].make_settings({}), name)


@dataclass
class TrainConfig:
    epochs: int = 200
    """Training epochs (200 is the reference); the learning-rate steps scale with them."""
    batch_size: int = 32
    """Images per optimizer step (32 is the reference)."""
    lr: float = 1e-3
    """Adam learning rate before the step schedule (x0.1 at 40% of the epochs, x0.01 at 60%,
    x0.001 at 80%, x0.0005 at 90%)."""
    l2: float = 1e-4
    """Keras-style L2 penalty on convolution kernels (added to the loss as l2 * sum(w^2))."""
    augment: bool = True
    """Augment the training images with random shifts (up to train.shift of the size) and
    horizontal flips, as the reference."""
    shift: float = 0.1
    """Largest random shift as a fraction of the image size."""
    class_weight: str = "none"
    """Per-grade loss weights: none, or balanced (weights n / (K * count) for imbalanced sets)."""
    bn_stats: str = "epoch"
    """BatchNorm statistics used for evaluation: 'epoch' averages the last epoch's batches;
    'ema' is the reference's Keras moving average (momentum 0.99), which lags badly on small sets."""
    seed: int = 0
    """Seeds the split, the initial weights, shuffling and augmentation: same seed, same run on CPU."""
    device: str = "auto"
    """auto (cuda if available, then Apple's mps, else cpu), cpu, cuda, cuda:N or mps."""
    deterministic: bool = False
    """Force deterministic kernels (matters on GPU; CPU runs are reproducible anyway)."""
    threads: int = 0
    """CPU threads for torch; 0: the cores this process may use less those other work keeps busy.

    OMP_NUM_THREADS, when set, replaces that choice. The run's config.yaml records the count and
    --resume uses it again: the count changes a seeded run's weights slightly."""
    amp: str = "auto"
    """Mixed precision: auto (bf16 on a CUDA GPU and on a CPU with AVX512-BF16 or AMX, else fp32),
    bf16 (everywhere), or off (fp32).

    bf16 trains about 1.7x faster on such CPUs; evaluation and export stay fp32. The run's
    config.yaml records what auto chose."""
    compile: str | bool = "auto"
    """torch.compile the training step: auto (only where a short measured probe says the compiled
    step repays its warm-up over the run), on, or off (eager).

    The run's config.yaml records what auto chose, and --resume uses it again without probing.
    true and false (configs and checkpoints from before the choice) read as on and off; YAML reads
    an unquoted on or off as true or false too. See training/compile_probe.py for the probe."""
    init: str | None = None
    """Start from another run's weights (a run folder or a .pt checkpoint): the backbone always,
    the head too when the task and the grades match; else the head starts fresh."""
    freeze_backbone_epochs: int = 0
    """With --init: train only the head for this many first epochs.

    The backbone's weights stay as they came; its BatchNorm statistics still follow the new photos."""
    backbone_lr_scale: float = 1.0
    """The backbone learns at lr x this (0.1: ten times slower than the head; gentle fine-tuning).

    So fine-tuning adjusts pretrained features instead of overwriting them."""
    color_jitter: float = 0.0
    """Random brightness, contrast, saturation and per-channel colour gains of up to this
    fraction (0.1 = +-10%), drawn per image."""
    rotate: float = 0.0
    """Random rotations of up to this many degrees either way, drawn per image."""
    blur: float = 0.0
    """Random Gaussian blur with a sigma of up to this many pixels, drawn per image (0: none)."""
    ensemble: int = 1
    """Train this many networks on the same split and grade with their average: steadier and
    usually more exact than one network, at K times the training and grading time.

    Member seeds are seed*K .. seed*K+K-1; the average is of their probabilities (of their scores
    for regression)."""
    teacher: str | None = None
    """Learn from this model's grade probabilities too (its scores for regression): a run folder,
    a .pt checkpoint or an exported .onnx file, grading the same grades at the same image size.

    On the labelled photos the loss is (1 - distill_weight) x the task's loss + distill_weight x
    the cross-entropy with the teacher's probabilities; on --unlabeled photos the teacher's alone."""
    distill: bool = False
    """Train one network that learns from the recipe's ensemble: the recipe (--ensemble K, or a
    preset) is trained first into OUT/teacher, unless --teacher names one, and the run itself is
    a single network taught by it, on the labelled and any --unlabeled photos."""
    distill_weight: float = 0.5
    """With a teacher: the share of the teacher's probabilities in the loss on labelled photos
    (0: the true grades alone; 1: the teacher's alone)."""
    ema: float = 0.0
    """Validate, keep and calibrate an exponential moving average of the weights with this decay
    (0: off; 0.99-0.999 suits a few hundred photos).

    The average (of the weights and the BatchNorm statistics) is updated after every step; about
    1 / (1 - decay) steps are averaged. Not ``bn_stats: ema``, which is the reference's moving
    average of BatchNorm statistics alone."""
    log_to: str | list[str] | None = None
    """Also log each epoch's losses, metrics, learning rate and plots to tensorboard, mlflow, or
    both (tensorboard,mlflow); history.csv is written either way.

    Each needs its extra: pip install 'imgrade[tensorboard]' or 'imgrade[mlflow]'."""
    log_dir: str | None = None
    """TensorBoard: a folder shared by runs, each writing into DIR/PARENT/NAME (default: the run's
    own tensorboard/ folder)."""
    tracking_uri: str | None = None
    """MLflow: the tracking URI (default: $MLFLOW_TRACKING_URI, else a store in the run's mlruns/
    folder).

    Credentials go in MLflow's environment variables (MLFLOW_TRACKING_TOKEN, ...), never in the
    URI, which config.yaml keeps."""

    def __post_init__(self) -> None:
        if isinstance(self.log_to, (list, tuple)):
            self.log_to = ",".join(str(name) for name in self.log_to)
        if self.log_to is not None:
            names = [name.strip().lower() for name in str(self.log_to).split(",") if name.strip()]
            unknown = [name for name in names if name not in TRACKERS + ("none",)]
            if unknown:
                raise ConfigError(
                    f"train.log_to {unknown[0]!r} is not tensorboard or mlflow: set --log-to tensorboard, mlflow or both (tensorboard,mlflow)"
                )
            names = [name for name in TRACKERS if name in names]  # a fixed order, each once
            self.log_to = ",".join(names) or None
        if self.epochs < 1:
            raise ConfigError(f"train.epochs {self.epochs} must be at least 1: set --epochs")
        if self.batch_size < 1:
            raise ConfigError(f"train.batch_size {self.batch_size} must be at least 1: set --batch-size")
        if not self.lr > 0:
            raise ConfigError(f"train.lr {self.lr} must be positive: set --lr")
        if not self.l2 >= 0:
            raise ConfigError(f"train.l2 {self.l2} must be >= 0: set --l2")
        if not 0 <= self.shift < 0.5:
            raise ConfigError(f"train.shift {self.shift} must be in [0, 0.5): set --shift")
        if self.class_weight not in CLASS_WEIGHTS:
            raise ConfigError(f"train.class_weight {self.class_weight!r} is not none or balanced: set --class-weight")
        if self.bn_stats not in BN_STATS:
            raise ConfigError(f"train.bn_stats {self.bn_stats!r} is not epoch or ema: set --bn-stats")
        if self.threads < 0:
            raise ConfigError(f"train.threads {self.threads} must be >= 0: set --threads")
        if self.amp not in AMP_CHOICES:
            raise ConfigError(f"train.amp {self.amp!r} is not auto, bf16 or off: set --amp")
        if isinstance(self.compile, bool):  # a switch before the choice (and YAML's unquoted on/off)
            self.compile = "on" if self.compile else "off"
        if self.compile not in COMPILE_CHOICES:
            raise ConfigError(f"train.compile {self.compile!r} is not auto, on or off: set --compile")
        if self.freeze_backbone_epochs < 0:
            raise ConfigError(
                f"train.freeze_backbone_epochs {self.freeze_backbone_epochs} must be >= 0: set --freeze-backbone-epochs"
            )
        if not self.backbone_lr_scale >= 0:
            raise ConfigError(
                f"train.backbone_lr_scale {self.backbone_lr_scale} must be >= 0 (1 = same lr as the head): set --backbone-lr-scale"
            )
        if not 0 <= self.color_jitter < 1:
            raise ConfigError(f"train.color_jitter {self.color_jitter} must be in [0, 1), e.g. 0.1: set --color-jitter")
        if not 0 <= self.rotate <= 45:
            raise ConfigError(f"train.rotate {self.rotate} must be 0..45 degrees: set --rotate")
        if not 0 <= self.blur <= 5:
            raise ConfigError(f"train.blur {self.blur} must be 0..5 pixels: set --blur")
        if self.ensemble < 1:
            raise ConfigError(
                f"train.ensemble {self.ensemble} must be at least 1 (1: one network; 5: an ensemble of five): set --ensemble"
            )
        if self.ema != 0 and not 0 < self.ema < 1:
            raise ConfigError(f"train.ema {self.ema} must be in (0, 1), e.g. 0.999, or 0 for none: set --ema")
        if not 0 <= self.distill_weight <= 1:
            raise ConfigError(
                f"train.distill_weight {self.distill_weight} must be in [0, 1], e.g. 0.5: set --distill-weight"
            )


@dataclass
class CalibrateConfig:
    objective: str = "qwk"
    """What tuned cut points maximise on the validation split: qwk, accuracy or mae."""
    alpha: float = 0.1
    """Grade sets contain the true grade with probability at least 1 - alpha."""
    folds: int = 5
    """Cross-validation folds on the validation predictions that decide tuned cut points vs the
    plain decision (rounding, or the head's own rule)."""
    holdout: float = 0.0
    """Fraction of the validation split kept out of epoch selection, for the grade sets alone
    (0.5 makes their coverage honest on small sets).

    The rest chooses the best epoch and the cut points. With 0 one split does all three, which
    makes its errors slightly optimistic, so coverage can fall below 1 - alpha on small sets."""
    tta: bool = False
    """Grade with test-time augmentation by default: each photo as the average of itself, its
    mirror and four small shifts (6 forward passes). evaluate, predict, export and serve follow it;
    their --tta / --no-tta override it. Both ways are always calibrated."""

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"calibrate.objective {self.objective!r} is not qwk, accuracy or mae: set --objective")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"--alpha {self.alpha} must be between 0 and 1 (exclusive), e.g. 0.1")
        if self.folds < 2:
            raise ConfigError(f"calibrate.folds {self.folds} must be at least 2: set --threshold-folds")
        if not 0 <= self.holdout < 1:
            raise ConfigError(f"--calibration-holdout {self.holdout} must be in [0, 1), e.g. 0.5")
