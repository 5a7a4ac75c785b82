"""The model card: what a model was trained on, how, how well it grades, and what it is not for.

:func:`render_model_card` turns a plain dict (gathered by ``pipeline/model_card.py``) into Markdown;
it reads no files, so the same dict always gives the same text.
"""

from __future__ import annotations

from typing import Any

from imgrade.evaluation.metrics import METRICS, grade_decision_metrics, headline

FEW_TEST_IMAGES = 10
"""A grade with fewer test images than this gets its figures called rough in the card."""


def render_model_card(card: dict[str, Any]) -> str:
    """The model card as Markdown.

    Args:
        card: ``name`` (the run folder's name), ``imgrade_version``, ``data`` (``source``, ``n``,
            ``image_size``, ``view``, ``grades`` and ``counts`` or ``target`` {min, max, mean},
            ``split_rule`` and ``split``: {name: {"n", "counts"}}), ``recipe`` (``task``, ``network``,
            ``head``, ``loss``, ``epochs``, ``batch_size``, ``lr``, ``augment``, ``class_weight``,
            ``pretrained``, ``init``, ``ema``, ``seed``, ``tta``, ``ensemble``: {"members", "seeds"}
            or None), ``test`` (what ``imgrade evaluate`` measures on the test split, or None when
            it is empty) and ``calibration`` (``rule``, ``cut_points``, ``reason``, ``objective``,
            ``folds``, ``grade_sets``: {"kind", "alpha", "n"} or None; None for a continuous target).

    >>> card = {
    ...     "name": "p1", "imgrade_version": "1.0",
    ...     "data": {"source": "synthetic cucumbers (seed 1)", "n": 4, "image_size": [32, 32], "view": "above",
    ...              "target": {"min": 1.0, "max": 3.5, "mean": 2.0}, "split_rule": "auto",
    ...              "split": {"train": {"n": 2}, "val": {"n": 1}, "test": {"n": 1}}},
    ...     "recipe": {"task": "regression", "network": "ResNet v2 depth 11", "epochs": 2, "seed": 0},
    ...     "test": {"n": 1, "mae": 0.25, "rmse": 0.25, "r2": None, "pearson": None},
    ...     "calibration": None,
    ... }
    >>> text = render_model_card(card)
    >>> text.splitlines()[0]
    '# Model card: p1'
    >>> "| 0.250 | 0.250 | - | - |" in text and "range 1 to 3.5" in text
    True
    """
    sections = [
        f"# Model card: {card['name']}",
        _summary(card),
        "## Data\n\n" + _data(card["data"]),
        "## Recipe\n\n" + _recipe(card["recipe"]),
        "## Test metrics\n\n" + _test(card),
    ]
    if card["data"].get("grades") is not None:
        sections.append("## Calibration\n\n" + _calibration(card.get("calibration"), card.get("test")))
    sections.append("## Intended use and limits\n\n" + _limits(card))
    return "\n\n".join(sections) + "\n"


def _summary(card: dict[str, Any]) -> str:
    data, recipe = card["data"], card["recipe"]
    what = f"{len(data['grades'])} grades" if data.get("grades") is not None else "a continuous target"
    ensemble = recipe.get("ensemble")
    network = recipe.get("network", "a network")
    if ensemble:
        network = f"an ensemble of {ensemble['members']} {network} networks"
    return (
        f"A {recipe['task']} model ({network}) that predicts {what} from {_size(data)} photos, trained on "
        f"{data['source']}. Written by imgrade {card.get('imgrade_version', '?')}."
    )


def _data(data: dict[str, Any]) -> str:
    lines = [f"- Source: {data['source']}", f"- Images: {data['n']}, {_size(data)}, view: {data.get('view', '?')}"]
    grades = data.get("grades")
    if grades is not None:
        lines.append(f"- Grades (in rank order): {', '.join(grades)}")
    else:
        t = data["target"]
        lines.append(f"- Target: continuous, range {_num(t['min'])} to {_num(t['max'])} (mean {_num(t['mean'])})")
    lines.append(f"- Split: {data.get('split_rule', '?')}")
    header = ["split", "images", *(grades or [])]
    rows = []
    for name, part in data["split"].items():
        counts = part.get("counts") or {}
        rows.append([name, part["n"], *(counts.get(g, 0) for g in grades or [])])
    if grades is not None and data.get("counts"):
        rows.append(["all", data["n"], *(data["counts"].get(g, 0) for g in grades)])
    return "\n".join(lines) + "\n\n" + _table(header, rows)


def _recipe(recipe: dict[str, Any]) -> str:
    ensemble = recipe.get("ensemble")
    labels = {
        "task": "task",
        "network": "network",
        "head": "head",
        "loss": "loss",
        "epochs": "epochs",
        "batch_size": "batch size",
        "lr": "learning rate",
        "augment": "augmentation",
        "class_weight": "class weights",
        "pretrained": "pretrained weights",
        "init": "started from",
        "ema": "weight averaging (EMA)",
        "teacher": "taught by",
        "distill_weight": "teacher's share of the loss on labelled photos",
        "unlabeled": "unlabelled photos",
        "seed": "seed",
        "tta": "test-time augmentation",
    }
    rows = [[label, _value(recipe[key])] for key, label in labels.items() if key in recipe]
    if ensemble:
        seeds = ", ".join(str(s) for s in ensemble["seeds"])
        rows.append(["ensemble", f"{ensemble['members']} members (seeds {seeds}), graded by their average"])
    return _table(["setting", "value"], rows)


def _test(card: dict[str, Any]) -> str:
    test = card.get("test")
    if not test:
        return "Not measured: the test split is empty. Grade a labelled set with `imgrade evaluate RUN --data DATA`."
    if card["data"].get("grades") is None:
        keys = [k for k in headline(graded=False) if k != "n"]
        return f"On {test['n']} test images:\n\n" + _table(
            [METRICS[k].label for k in keys], [[_num(test[k], METRICS[k].digits) for k in keys]]
        )
    used = (test.get("decisions") or {}).get("used") or (card.get("calibration") or {}).get("rule") or "the head's rule"
    text = f"On {test['n']} test images, graded as the model grades them (decision: {used}):\n\n"
    # the grades first: a card's reader asks how often the grade is right before how far the score is off
    decision = grade_decision_metrics()
    keys = [*decision, *(k for k in headline(graded=True) if k != "n" and k not in decision)]
    text += _table(
        [_CARD_LABELS.get(k, METRICS[k].label) for k in keys], [[_num(test.get(k), METRICS[k].digits) for k in keys]]
    )
    sets = (test.get("grade_sets") or {}).get("per_grade") or {}
    header = ["grade", "test images", "accuracy (recall)", "precision", "score MAE", "mean error"]
    if sets:
        header += ["set coverage", "mean set size"]
    rows = []
    for grade, m in test["per_grade"].items():
        row = [grade, m["n"], _num(m["recall"], 3), _num(m["precision"], 3), _num(m["mae"], 3)]
        row.append(_num(m["mean_error"], 3, sign=True))
        if sets:
            row += [_num(sets[grade]["coverage"], 3), _num(sets[grade]["mean_size"], 2)]
        rows.append(row)
    return (
        text
        + "\n\nPer grade (mean error: score minus true grade; below zero, graded too low):\n\n"
        + _table(header, rows)
    )


_CARD_LABELS = {"within1": "within one grade", "mae": "score MAE", "rmse": "score RMSE"}
"""The card's words where the tables' short labels would leave a reader guessing."""


def _calibration(calibration: dict[str, Any] | None, test: dict[str, Any] | None) -> str:
    if not calibration:
        return "Not calibrated: grades come from the head's own rule and there are no grade sets."
    cuts = calibration.get("cut_points")
    decision = calibration.get("rule") or "the head's own rule"
    if cuts:
        decision += " at " + ", ".join(_num(c, 3) for c in cuts)
    lines = [f"- Decision: {decision}"]
    if calibration.get("reason"):
        lines.append(f"- Why: {calibration['reason']}")
    if calibration.get("objective"):
        folds = f", {calibration['folds']}-fold cross-validation" if calibration.get("folds") else ""
        lines.append(f"- Objective of the cut points: {calibration['objective']} on the validation split{folds}")
    grade_sets = calibration.get("grade_sets")
    if grade_sets:
        alpha = float(grade_sets["alpha"])
        lines.append(
            f"- Grade sets: {grade_sets['kind']}, alpha {_num(alpha)} (each set should hold the true grade "
            f"{_num(100 * (1 - alpha))}% of the time), fitted on {grade_sets.get('n', '?')} images"
        )
        measured = (test or {}).get("grade_sets")
        if measured:
            lines.append(
                f"- Grade sets on the test split: coverage {_num(measured['coverage'], 3)}, "
                f"mean size {_num(measured['mean_size'], 2)} grades"
            )
    else:
        lines.append("- Grade sets: none (too few validation images for the alpha asked)")
    return "\n".join(lines)


def _limits(card: dict[str, Any]) -> str:
    data, test = card["data"], card.get("test") or {}
    grades = data.get("grades")
    lines = [
        f"- Learned from the {data['split']['train']['n']} training photos ({_size(data)}, view "
        f"{data.get('view', '?')}) of {data['source']}. Use it on photos of the same kind of item, taken with the same camera, set-up, lighting and viewpoint.",
        "- Not for other items or varieties, other cameras, backgrounds or lighting without first checking it on a "
        "labelled sample of them (`imgrade evaluate RUN --data NEW`): its figures above hold for photos like the "
        "test split only.",
    ]
    if grades is not None:
        lines.append(
            f"- It can only answer one of {', '.join(grades)}: an item outside these grades gets the nearest one."
        )
        few = [g for g, m in (test.get("per_grade") or {}).items() if m["n"] < FEW_TEST_IMAGES]
        if few:
            lines.append(
                f"- Fewer than {FEW_TEST_IMAGES} test images for {', '.join(few)}: the figures of these grades are rough."
            )
    else:
        t = data["target"]
        lines.append(
            f"- Trained on targets from {_num(t['min'])} to {_num(t['max'])}: predictions outside that range "
            "are extrapolation and not to be trusted."
        )
    if test and test["n"] < 100:
        lines.append(f"- The test split holds {test['n']} images: the test metrics are a rough estimate.")
    lines.append("- A grade decides nothing on its own where a mistake is costly: check a sample by hand.")
    return "\n".join(lines)


def _size(data: dict[str, Any]) -> str:
    size = data.get("image_size") or ["?", "?"]
    return f"{size[0]}x{size[1]}"


def _value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _num(value: float | None, digits: int | None = None, sign: bool = False) -> str:
    """A number for the card; '-' for None.

    >>> _num(0.5), _num(2.0), _num(0.12345, 3), _num(-0.2, 2, sign=True), _num(None)
    ('0.5', '2', '0.123', '-0.20', '-')
    """
    if value is None:
        return "-"
    if digits is None:
        return f"{value:g}"
    return f"{value:{'+' if sign else ''}.{digits}f}"


def _cell(text: str) -> str:
    """Text for a Markdown table cell: pipes escaped, one line."""
    return " ".join(str(text).replace("|", "\\|").split())


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(str(v)) for v in row) + " |" for row in rows]
    return "\n".join(lines)
