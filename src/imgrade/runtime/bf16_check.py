"""Whether grading in bf16 may replace fp32 for a model: the same grades, measured faster.

:func:`check_bf16` grades a run's validation photos with the exported file in ONNX Runtime (fp32)
and in OpenVINO (bf16 where the CPU computes it natively) and times both. ``--runtime auto`` grades
with bf16 only where such a check, stored in the file's metadata (``bf16_check``), :attr:`Bf16Check.passed`:

- OpenVINO really computed in bf16 (on a CPU without bf16 units it computes in fp32, which checks nothing);
- at least ``MIN_AGREEMENT`` (98%) of the photos get the same grade both ways;
- neither exact accuracy nor QWK drops by more than ``TOLERANCE`` (0.01) or one photo's worth,
  whichever is larger: a photo that lies on a cut point may flip either way, and on 50 photos one
  flip moves exact accuracy by 0.02;
- and bf16 graded faster than fp32.

This module never imports torch.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from imgrade.core.cpu import cpu_model
from imgrade.evaluation.metrics import quadratic_weighted_kappa
from imgrade.runtime.grading import CPU_BATCH, Engine
from imgrade.runtime.onnx_quantize import dropped

MIN_AGREEMENT = 0.98
"""The least share of photos that must get the same grade in bf16 as in fp32."""
TOLERANCE = 0.01
"""The largest drop of exact accuracy or QWK accepted, unless one photo's worth is larger."""
TIMED_IMAGES = 256
"""Images each runtime grades per timed pass (the validation photos, repeated as needed)."""
TIMED_PASSES = 3
"""Timed passes per runtime, after one warm-up pass; the fastest counts."""


@dataclass(frozen=True)
class Bf16Check:
    """fp32 (ONNX Runtime) against bf16 (OpenVINO) on the same labelled photos."""

    n: int
    """Labelled photos graded both ways."""
    precision: str
    """What OpenVINO computed in: "bf16", or "fp32" on a CPU without bf16 units."""
    fp32_accuracy: float
    fp32_qwk: float
    bf16_accuracy: float
    bf16_qwk: float
    agreement: float
    """The share of photos both ways give the same grade."""
    accuracy_tolerance: float
    """The exact-accuracy drop accepted: ``TOLERANCE`` or one photo's worth (1/n), the larger."""
    qwk_tolerance: float
    """The QWK drop accepted: ``TOLERANCE`` or the most one photo moved by one grade costs, the larger."""
    fp32_rate: float
    """Images/s of ONNX Runtime in fp32, batch ``CPU_BATCH``."""
    bf16_rate: float
    """Images/s of OpenVINO, batch ``CPU_BATCH``."""
    cpu: str = "unknown CPU"
    """The CPU it was measured on."""

    @property
    def problems(self) -> list[str]:
        """Why bf16 may not replace fp32 here (none: it may).

        >>> Bf16Check(200, "bf16", 0.63, 0.82, 0.625, 0.815, 0.99, 0.01, 0.012, 1900.0, 7100.0).problems
        []
        >>> Bf16Check(200, "fp32", 0.63, 0.82, 0.63, 0.82, 1.0, 0.01, 0.012, 1900.0, 1800.0).problems
        ['OpenVINO computed in fp32, not bf16, on unknown CPU', 'bf16 was not faster (1800 against 1900 images/s)']
        """
        found = []
        if self.precision != "bf16":
            found.append(f"OpenVINO computed in {self.precision}, not bf16, on {self.cpu}")
        if self.agreement < MIN_AGREEMENT:
            found.append(f"only {self.agreement:.1%} of the grades agree (at least {MIN_AGREEMENT:.0%} needed)")
        for metric, before, after, tolerance in (
            ("exact accuracy", self.fp32_accuracy, self.bf16_accuracy, self.accuracy_tolerance),
            ("QWK", self.fp32_qwk, self.bf16_qwk, self.qwk_tolerance),
        ):
            if dropped(before, after) > tolerance + 1e-9:
                found.append(f"{metric} dropped from {before:.3f} to {after:.3f} (at most {tolerance:.3f} allowed)")
        if not self.bf16_rate > self.fp32_rate:
            found.append(f"bf16 was not faster ({self.bf16_rate:.0f} against {self.fp32_rate:.0f} images/s)")
        return found

    @property
    def passed(self) -> bool:
        """Whether ``--runtime auto`` may grade this model in bf16 on a CPU with bf16 units."""
        return not self.problems

    @property
    def speedup(self) -> float:
        return self.bf16_rate / self.fp32_rate if self.fp32_rate > 0 else math.nan

    def summary(self, photos: str = "validation photos") -> str:
        """Both ways' numbers in one line (``photos``: what the photos were).

        >>> Bf16Check(247, "bf16", 0.632, 0.820, 0.623, 0.819, 0.992, 0.01, 0.012, 1976.0, 7133.0).summary()
        'bf16 check on 247 validation photos, fp32 (ONNX Runtime) -> bf16 (OpenVINO): same grade 99.2%, exact accuracy 0.632 -> 0.623, QWK 0.820 -> 0.819, 1976 -> 7133 images/s (3.61x): passed'
        """
        verdict = "passed" if self.passed else "refused: " + "; ".join(self.problems)
        return (
            f"bf16 check on {self.n} {photos}, fp32 (ONNX Runtime) -> {self.precision} (OpenVINO): "
            f"same grade {self.agreement:.1%}, exact accuracy {self.fp32_accuracy:.3f} -> {self.bf16_accuracy:.3f}, "
            f"QWK {self.fp32_qwk:.3f} -> {self.bf16_qwk:.3f}, {self.fp32_rate:.0f} -> {self.bf16_rate:.0f} images/s "
            f"({self.speedup:.2f}x): {verdict}"
        )

    def to_dict(self) -> dict:
        """The JSON kept in the file's metadata (``bf16_check``); an undefined QWK is null."""
        fields = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(self).items()}
        return {**fields, "passed": self.passed}

    @classmethod
    def from_dict(cls, data) -> Bf16Check | None:
        """The check a file's metadata holds, or None where it holds none or one this imgrade cannot read."""
        if not isinstance(data, dict):
            return None
        try:
            values = {
                name: (math.nan if data.get(name) is None and name.endswith("qwk") else data[name])
                for name in cls.__dataclass_fields__
                if name in data or name.endswith("qwk")
            }
            check = cls(**values)
        except (KeyError, TypeError):
            return None
        numbers = [v for k, v in asdict(check).items() if k not in ("precision", "cpu")]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers):
            return None
        return check


def one_photo_qwk(targets: np.ndarray, grades: np.ndarray, num_grades: int) -> float:
    """The most QWK that moving one photo's grade by one step can cost.

    Perfect grades of four photos: moving the first to grade 1 leaves kappa ``1 - (1/9) / (8/9)``.

    >>> round(one_photo_qwk(np.array([0, 1, 2, 3]), np.array([0, 1, 2, 3]), 4), 6)
    0.125
    """
    base = quadratic_weighted_kappa(targets, grades, num_grades)
    if math.isnan(base):
        return 0.0
    worst = 0.0
    for i in range(len(grades)):
        for step in (-1, 1):
            moved = grades[i] + step
            if 0 <= moved < num_grades:
                changed = grades.copy()
                changed[i] = moved
                worst = max(worst, base - quadratic_weighted_kappa(targets, changed, num_grades))
    return worst


def check_bf16(fp32: Engine, bf16: Engine, images: np.ndarray, targets: np.ndarray) -> Bf16Check:
    """Grade ``images`` (uint8, labelled with grade indexes ``targets``) with both graders, each with
    the file's own decision, and time both; ``bf16.precision`` says what it computed in."""
    assert fp32.grade_names is not None and len(images) > 0
    y = np.asarray(targets).astype(np.int64)
    num_grades = len(fp32.grade_names)
    before, after = fp32.grades(fp32.outputs(images)), bf16.grades(bf16.outputs(images))
    timed = np.resize(images, (max(TIMED_IMAGES, len(images)), *images.shape[1:]))
    return Bf16Check(
        n=len(y),
        precision=bf16.precision,
        fp32_accuracy=float(np.mean(before == y)),
        fp32_qwk=float(quadratic_weighted_kappa(y, before, num_grades)),
        bf16_accuracy=float(np.mean(after == y)),
        bf16_qwk=float(quadratic_weighted_kappa(y, after, num_grades)),
        agreement=float(np.mean(before == after)),
        accuracy_tolerance=max(TOLERANCE, 1 / len(y)),
        qwk_tolerance=max(TOLERANCE, one_photo_qwk(y, before, num_grades)),
        fp32_rate=images_per_second(fp32, timed),
        bf16_rate=images_per_second(bf16, timed),
        cpu=cpu_model(),
    )


def images_per_second(grader: Engine, images: np.ndarray) -> float:
    """The fastest of ``TIMED_PASSES`` passes over ``images``, ``CPU_BATCH`` at a time, after one warm-up."""
    grader.outputs(images[:CPU_BATCH])
    best = math.inf
    for _ in range(TIMED_PASSES):
        start = time.perf_counter()
        grader.outputs(images, batch_size=CPU_BATCH)
        best = min(best, time.perf_counter() - start)
    return len(images) / best
