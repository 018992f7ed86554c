"""The printed table: one line per figure, median and spread, first call apart."""

from __future__ import annotations

from typing import Any, Iterable

# Context fields shown in the table's last column, in this order.
_CONTEXT = ("config", "batch_size", "dtype", "devices", "image_size", "note")


def _num(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    x = float(x)
    if x == 0:
        return "0"
    if abs(x) >= 1e5 or abs(x) < 1e-2:
        return f"{x:.3g}"
    return f"{x:.4g}" if abs(x) < 100 else f"{x:.1f}"


def rows(suites: dict[str, dict[str, Any]]) -> Iterable[list[str]]:
    for suite, result in suites.items():
        if "skipped" in result:
            yield [suite, "(suite skipped)", "-", "-", "", "-", result["skipped"]]
            continue
        for fig in result.get("figures", []):
            if "skipped" in fig:
                yield [suite, fig["name"], "-", "-", "", "-", "skipped: " + fig["skipped"]]
                continue
            spread = f"{_num(fig['min'])}..{_num(fig['max'])}" if "min" in fig else "-"
            context = " ".join(f"{k}={fig[k]}" for k in _CONTEXT if k in fig)
            yield [suite, fig["name"], _num(fig.get("median")), spread, fig.get("unit", ""),
                   _num(fig.get("first_call_s")), context]


def render(suites: dict[str, dict[str, Any]]) -> str:
    header = ["suite", "figure", "median", "min..max", "unit", "first call s", "context"]
    table = [header] + list(rows(suites))
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    lines = []
    for i, r in enumerate(table):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 7)
    return "\n".join(lines)
