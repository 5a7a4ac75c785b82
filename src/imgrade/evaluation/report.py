"""What a user reads: the text summary the command line prints and the HTML reports."""

from __future__ import annotations

import json
from pathlib import Path

from imgrade.evaluation import html
from imgrade.evaluation.gallery import GalleryPhotos, gallery_blocks
from imgrade.evaluation.metrics import METRICS, compared, describe, grade_decision_metrics, headline, per_grade_metrics

_SPLITS = {
    "train": ("train", "learn the weights"),
    "val": ("validation", "choose the best epoch and the cut points"),
    "cal": ("calibration", "calibrate the grade sets"),
    "test": ("test", "measure the model (imgrade evaluate grades these)"),
}


def format_members_table(metrics: dict) -> str:
    """An ensemble's grades beside each member's alone (``metrics["members"]``), as aligned text.

    >>> m = {"accuracy": 0.7, "within1": 0.9, "grade_mae": 0.4, "qwk": 0.85, "decisions": None,
    ...      "members": [{"member": "m0", "seed": 0, "accuracy": 0.6, "within1": 0.9, "grade_mae": 0.5, "qwk": 0.8}]}
    >>> print(format_members_table(m))
    grader                  accuracy  within-1  grade MAE    QWK
    ensemble                   0.700     0.900      0.400  0.850
    m0 (seed 0)                0.600     0.900      0.500  0.800
    """
    decisions = metrics.get("decisions")
    used = decisions[decisions["used"]] if decisions else metrics
    rows = [("ensemble", used)] + [(f"{m['member']} (seed {m['seed']})", m) for m in metrics["members"]]
    columns = grade_decision_metrics()
    lines = [f"{'grader':<22}  {_header(columns)}"]
    lines += [f"{label:<22}  {_cells(m, columns)}" for label, m in rows]
    return "\n".join(lines)


def format_metrics_table(metrics: dict, grade_names: list[str] | None) -> str:
    """Headline metrics, then (for ordinal metrics) a per-grade table, as aligned text.

    Args:
        metrics: the dict from ``ordinal_metrics`` or ``continuous_metrics``.
        grade_names: the grade order for the per-grade table; None for a continuous target
            (or to take the order of ``metrics["per_grade"]``).

    Numbers have 3 decimals; an undefined value (None) shows as "n/a", and a grade without
    samples shows "-" in its metric columns. Mean error is signed (predicted - true).
    """
    per_grade = metrics.get("per_grade")
    rows = [
        (METRICS[key].label, format_number(metrics.get(key), "n/a", digits=METRICS[key].digits))
        for key in headline(graded=per_grade is not None)
        if key in metrics
    ]
    label_width = max(len(label) for label, _ in rows)
    value_width = max(len(value) for _, value in rows)
    lines = [f"{label:<{label_width}}  {value:>{value_width}}" for label, value in rows]
    columns = grade_decision_metrics()
    decisions = metrics.get("decisions")
    if decisions:
        lines += ["", f"{'grades from':<18}  {_header(columns)}"]
        for label, m in decisions.items():
            if label == "used":
                continue
            mark = "  <- used" if label == decisions.get("used") else ""
            lines.append(f"{label:<18}  {_cells(m, columns)}{mark}")
    gap = metrics.get("domain_gap")
    if gap:
        keys = ("n", *columns)
        lines += ["", f"{'domain gap':<22}  {_header(keys, signed=True)}"]
        for label, m in (
            ("run's own test split", gap["own"]),
            ("this data", gap["this"]),
            ("gap (this - own)", gap["gap"]),
        ):
            lines.append(f"{label:<22}  {_cells(m, keys, signed=label.startswith('gap'))}")
    sets = metrics.get("grade_sets")
    if sets:
        lines += [
            "",
            f"grade sets ({sets['kind']}, alpha {sets['alpha']}): coverage {sets['coverage']:.3f}, mean size {sets['mean_size']:.2f} grades",
        ]
    if not per_grade:
        return "\n".join(lines)

    names = list(grade_names) if grade_names is not None else list(per_grade)
    keys = per_grade_metrics()
    table = [("grade", *(METRICS[key].label for key in keys), *((METRICS["coverage"].label,) if sets else ()))]
    for name in names:
        entry = per_grade.get(name) or {"n": 0}
        table.append(
            (
                str(name),
                *(format_number(entry.get(key), "-", METRICS[key].signed, METRICS[key].digits) for key in keys),
                *([format_number((sets["per_grade"].get(name) or {}).get("coverage"), "-")] if sets else []),
            )
        )
    widths = [max(len(row[column]) for row in table) for column in range(len(table[0]))]
    lines += ["", "per grade:"]
    for row in table:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _width(key: str, signed: bool) -> int:
    """A column as wide as its name, and at least as a value (``0.812``; ``+0.041`` when signed)."""
    return max(len(METRICS[key].label), 6 if signed else 5)


def _header(keys, signed: bool = False) -> str:
    return "  ".join(f"{METRICS[key].label:>{_width(key, signed)}}" for key in keys)


def _cells(m: dict, keys, signed: bool = False) -> str:
    return "  ".join(
        f"{format_number(m.get(key), '' if key == 'n' else 'n/a', signed):>{_width(key, signed)}}" for key in keys
    )


def format_number(value, missing: str = "n/a", signed: bool = False, digits: int = 3) -> str:
    """A metric as the tables show it: ``digits`` decimals (``+`` signed for differences), ints as they are.

    >>> format_number(0.12345), format_number(-0.5, signed=True), format_number(None, "-"), format_number(7)
    ('0.123', '-0.500', '-', '7')
    """
    if value is None:
        return missing
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def write_run_report(
    path,
    title: str,
    metrics: dict,
    grade_names,
    pictures: dict,
    cfg,
    run_dir: Path,
    thresholds: dict | None,
    photos: GalleryPhotos | None = None,
) -> Path:
    """One self-contained report.html for an evaluation: metrics, tables, photos, plots, calibration, data, config.

    ``run_dir`` is the run folder, or the exported file graded (then ``cfg`` is None: no config).
    With ``photos`` (a graded target) the page shows each grade's worst-graded photos and a
    confusion matrix whose cells link to theirs. The run's split sizes come from
    ``run_dir/split.json`` and the data summary from ``run_dir/data.json``, as training wrote them;
    a run without them shows no such table.
    """
    names = {key: metric.label for key, metric in METRICS.items()}
    columns = grade_decision_metrics()
    blocks = [html.heading("Metrics")]
    graded = metrics.get("per_grade") is not None
    if metrics.get("data"):
        blocks.append(
            html.text(
                f"The {metrics.get('task', '')} model on {metrics.get('n')} images ({metrics.get('split', '')}) of {metrics['data']}."
            )
        )
    if metrics.get("model"):  # an exported file: which one, exactly
        blocks.append(html.kv(metrics["model"], caption="the graded file"))
    blocks.append(html.kv({names[k]: metrics[k] for k in headline(graded) if k in metrics}))
    if graded:
        blocks.append(html.text(describe(headline(graded))))
    grade_header = [names[k] for k in columns]
    decisions = metrics.get("decisions")
    if decisions:
        rows = [[label, *(m[k] for k in columns)] for label, m in decisions.items() if label != "used"]
        used = [r[0] for r in rows].index(decisions["used"]) if decisions["used"] in [r[0] for r in rows] else None
        blocks.append(
            html.table(
                ["grades from", *grade_header],
                rows,
                caption="plain decision vs tuned cut points (the highlighted row is used)",
                highlight_row=used,
            )
        )
    if metrics.get("members"):
        used_metrics = decisions[decisions["used"]] if decisions else metrics
        rows = [["ensemble", *(used_metrics[k] for k in columns)]]
        rows += [[f"{m['member']} (seed {m['seed']})", *(m[k] for k in columns)] for m in metrics["members"]]
        blocks.append(
            html.table(
                ["grader", *grade_header],
                rows,
                caption="the ensemble beside each of its members alone",
                highlight_row=0,
            )
        )
    gap = metrics.get("domain_gap")
    if gap:
        keys = ("n", *columns)
        rows = [
            [label, *[m.get(k) for k in keys]]
            for label, m in (
                (f"the run's own test split ({gap['own']['data']})", gap["own"]),
                ("these images", gap["this"]),
                ("gap (these - own)", gap["gap"]),
            )
        ]
        blocks.append(
            html.table(
                ["images", *(names[k] for k in keys)],
                rows,
                caption="domain gap: the same model on the data it was trained for and on these images",
            )
        )
    if thresholds:
        blocks.append(html.text(f"Cut points: {thresholds.get('reason', '')}"))
        if thresholds.get("kind") == "tuned":
            blocks.append(
                html.kv(
                    {f"{grade_names[k]} | {grade_names[k + 1]}": v for k, v in enumerate(thresholds["thresholds"])},
                    caption="tuned cut points on the score",
                )
            )
    sets = metrics.get("grade_sets")
    if sets:
        blocks.append(
            html.text(
                f"Grade sets ({sets['kind']}): each set should contain the true grade for at least {1 - sets['alpha']:.0%} of images. "
                f"Measured on these images: coverage {sets['coverage']:.3f}, mean set size {sets['mean_size']:.2f} grades."
            )
        )
    if metrics.get("per_grade"):
        keys = per_grade_metrics()
        header = ["grade", *(names[k] for k in keys)] + ([names["coverage"], names["set_size"]] if sets else [])
        rows = []
        for name in grade_names:
            g = metrics["per_grade"][name]
            row = [name, *(g[k] for k in keys)]
            if sets:
                gs = sets["per_grade"].get(name) or {}
                row += [gs.get("coverage"), gs.get("mean_size")]
            rows.append(row)
        blocks += [html.heading("Per grade"), html.text(describe(keys)), html.table(header, rows)]
    if photos is not None and photos.per_grade > 0 and grade_names is not None:
        blocks += gallery_blocks(photos, grade_names)
    blocks.append(html.heading("Pictures"))
    captions = {
        "scatter": "predicted score vs true grade",
        "violin": "error per true grade",
        "confusion": "confusion matrix",
        "loss": "training and validation loss",
    }
    blocks += [html.image(p, captions.get(k, k)) for k, p in pictures.items()]
    blocks.append(html.heading("Data"))
    data_json = Path(run_dir) / "data.json"
    if data_json.is_file():
        data = json.loads(data_json.read_text())
        blocks.append(
            html.kv(
                {"source": data.get("source"), "images": data.get("n"), "dropped": data.get("dropped") or "nothing"}
            )
        )
        if data.get("counts"):
            blocks.append(
                html.table(
                    ["grade", "images"], [[g, c] for g, c in data["counts"].items()], caption="the whole data set"
                )
            )
    sizes = split_sizes(run_dir)
    if sizes:
        roles = {name: role for name, (_, role) in _SPLITS.items()}
        if "cal" not in sizes:  # the grade sets were calibrated on the validation images too
            roles["val"] = "choose the best epoch, the cut points and the grade sets"
        rows = [[_SPLITS[name][0], sizes[name], roles[name]] for name in _SPLITS if name in sizes]
        blocks.append(
            html.table(["split", "images", "used to"], rows, caption=f"the run's split ({sum(sizes.values())} images)")
        )
    if cfg is not None:
        blocks += [html.heading("Configuration"), html.pre(_yaml(cfg.to_dict()), caption="config.yaml")]
    return html.write_report(path, f"imgrade report: {title}", blocks, subtitle=str(run_dir))


def split_sizes(run_dir) -> dict[str, int]:
    """The number of images in each part of a run's split (train, val, cal, test) from its split.json; {} without one.

    >>> import json, tempfile
    >>> run = Path(tempfile.mkdtemp())
    >>> _ = (run / "split.json").write_text(json.dumps({"n": 5, "train": [0, 1, 2], "val": [3], "test": [4], "ids": {}}))
    >>> split_sizes(run)
    {'train': 3, 'val': 1, 'test': 1}
    """
    try:
        saved = json.loads((Path(run_dir) / "split.json").read_text())
    except (OSError, ValueError):
        return {}
    return {name: len(saved[name]) for name in _SPLITS if isinstance(saved.get(name), list)}


def write_compare_report(
    path,
    summary: list[dict],
    recommendation: str,
    boxes: Path,
    cfg,
    *,
    recipes,
    seeds: int,
    folds: int,
    gain_test: str = "p: paired t-test",
) -> Path:
    """One self-contained report.html for a comparison of formulations."""
    over = f"{folds}-fold cross-validation" if folds else f"{seeds} seeds on one split"
    blocks = [
        html.heading("Recommendation"),
        html.text(recommendation),
        html.heading("Test metrics"),
        html.text(
            f"Recipes {', '.join(recipes)}; same split(s) and budget ({cfg.train.epochs} epochs) for all; {over}. "
            "'own rule' is the head's plain decision (rounding, argmax, rank count); 'calibrated' uses the cut "
            "points chosen on the validation split (tuned when they helped out of fold, else the plain decision)."
        ),
    ]
    metrics = compared(table_only=True)
    rows = [
        [
            s["formulation"],
            s["runs"],
            *[mean_std(s, m) for m in metrics],
            paired_gain(s, "qwk"),
            paired_gain(s, "accuracy"),
        ]
        for s in summary
    ]
    header = [
        "formulation",
        "runs",
        *(METRICS[m].label for m in metrics),
        f"{METRICS['qwk'].label} gain",
        f"{METRICS['accuracy'].label} gain",
    ]
    blocks.append(
        html.table(
            header,
            rows,
            caption=f"mean ± std; gains are paired differences against regression with rounding, mean ± standard error ({gain_test})",
        )
    )
    blocks += [
        html.image(boxes, "test metrics per formulation"),
        html.heading("Configuration"),
        html.pre(_yaml(cfg.to_dict()), caption="base config"),
    ]
    return html.write_report(path, "imgrade comparison of formulations", blocks, subtitle=str(Path(path).parent))


def mean_std(entry: dict, metric: str) -> str:
    """``"0.812 ± 0.031"`` from ``entry[metric]`` and ``entry[metric + "_std"]``; "-" when missing."""
    value, std = entry.get(metric), entry.get(metric + "_std")
    if value is None:
        return "-"
    digits = METRICS[metric].digits
    return f"{value:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def paired_gain(entry: dict, metric: str) -> str:
    """The paired difference against the reference, its standard error and p-value: ``"+0.041 ± 0.015 (p=0.03)"``.

    >>> paired_gain({"formulation": "corn, own rule", "qwk_diff": 0.0412, "qwk_diff_se": 0.0151, "qwk_p": 0.0312}, "qwk")
    '+0.041 ± 0.015 (p=0.031)'
    """
    if entry.get(f"{metric}_diff") is None:
        return "reference" if entry["formulation"].startswith("regression, rounding") else "-"
    se, p = entry.get(f"{metric}_diff_se"), entry.get(f"{metric}_p")
    return (
        f"{entry[f'{metric}_diff']:+.3f}"
        + (f" ± {se:.3f}" if se is not None else "")
        + (f" (p={p:.2g})" if p is not None else "")
    )


def _yaml(obj) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False)
