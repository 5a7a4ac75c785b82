"""The text summary of an evaluation that the command line prints."""

from __future__ import annotations

_ORDINAL_HEADLINE = (
    ("n", "n"), ("MAE", "mae"), ("RMSE", "rmse"), ("accuracy", "accuracy"), ("within-1", "within1"), ("QWK", "qwk"),
)
_CONTINUOUS_HEADLINE = (("n", "n"), ("MAE", "mae"), ("RMSE", "rmse"), ("R2", "r2"), ("Pearson", "pearson"))
_PER_GRADE_HEADER = ("grade", "n", "MAE", "accuracy", "mean error")


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
    headline = _ORDINAL_HEADLINE if per_grade is not None else _CONTINUOUS_HEADLINE
    rows = [(label, _number(metrics.get(key), "n/a")) for label, key in headline if key in metrics]
    label_width = max(len(label) for label, _ in rows)
    value_width = max(len(value) for _, value in rows)
    lines = [f"{label:<{label_width}}  {value:>{value_width}}" for label, value in rows]
    if not per_grade:
        return "\n".join(lines)

    names = list(grade_names) if grade_names is not None else list(per_grade)
    table = [_PER_GRADE_HEADER]
    for name in names:
        entry = per_grade.get(name) or {"n": 0}
        table.append((
            str(name),
            str(entry.get("n", 0)),
            _number(entry.get("mae"), "-"),
            _number(entry.get("accuracy"), "-"),
            _number(entry.get("mean_error"), "-", signed=True),
        ))
    widths = [max(len(row[column]) for row in table) for column in range(len(_PER_GRADE_HEADER))]
    lines += ["", "per grade:"]
    for row in table:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _number(value, missing: str, signed: bool = False) -> str:
    if value is None:
        return missing
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{value:+.3f}" if signed else f"{value:.3f}"
