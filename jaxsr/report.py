"""The evaluation report: verdict sentences, text tables and a self-contained index.html.

`summary_table(summary)` is the plain-text (Markdown) table the CLI and the
demo print. `verdicts(summary, variant)` gives one plain sentence per metric
saying which method won, also when the autoencoder loses. `write_report`
draws the figures (jaxsr.figures) and writes index.html next to them; images
are referenced by relative path, so the folder can be moved or zipped whole.
"""

from __future__ import annotations

import html
import json
import logging
import os
import pathlib
from typing import Any

import numpy as np

from jaxsr import figures

log = logging.getLogger(__name__)

LONG_NAMES = {
    "ae": "the autoencoder",
    "linear": "linear interpolation",
    "bspline": "B-spline interpolation",
    "lanczos": "Lanczos interpolation",
}
METRIC_TITLES = {"ssim": "SSIM", "psnr": "PSNR", "vif": "VIF"}
UNITS = {"psnr": " dB"}
VARIANT_TITLES = {
    "dropped": "Reconstructed slices (primary)",
    "all": "All slices, paper-compatible variant",
}


def long_name(method: str, capital: bool = False) -> str:
    name = LONG_NAMES.get(method, method)
    return name[0].upper() + name[1:] if capital else name


def format_value(metric: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    return f"{value:.2f}" if metric == "psnr" else f"{value:.4f}"


def format_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    if p == 0.0:
        return "< 1e-300"
    return f"{p:.2g}"


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def verdicts(summary: dict, variant: str | None = None) -> dict[str, str]:
    """One sentence per metric: who won, by how much, and whether it is significant."""
    variant = variant or summary["primary_variant"]
    block = summary["variants"][variant]
    ref = summary["reference"]
    alpha = summary["significance_level"]
    out = {}
    for metric, w in block["winners"].items():
        title, unit = METRIC_TITLES.get(metric, metric), UNITS.get(metric, "")
        best = w["best"]
        ref_value = format_value(metric, w["reference_median"])
        if not best:
            out[metric] = f"No method has a {title} score."
        elif w["reference_wins"]:
            other = w["best_other"]
            sentence = (f"{long_name(ref, True)} won in {title} (median {ref_value} vs "
                        f"{format_value(metric, w['best_other_median'])}{unit} for {long_name(other)}, the best of the others)")
            tests = block["wilcoxon"]
            weak = [m for m in tests if tests[m][metric]["p"] is None or tests[m][metric]["p"] >= alpha]
            if not tests:
                sentence += "."
            elif not weak:
                sentence += (f"; one-sided Wilcoxon signed-rank p < {alpha:g} against every other method "
                             f"(largest p = {format_p(w['max_p'])}).")
            else:
                detail = ", ".join(f"{long_name(m)} (p = {format_p(tests[m][metric]['p'])})" for m in weak)
                sentence += f"; but its advantage is not significant at p < {alpha:g} over {detail}."
            out[metric] = sentence
        elif ref in best:
            others = [long_name(m) for m in best if m != ref]
            out[metric] = f"{long_name(ref, True)} tied with {_join(others)} in {title} (median {ref_value}{unit})."
        else:
            names = [long_name(m) for m in best]
            winner = _join(names)
            winner = winner[0].upper() + winner[1:]
            verb = "beat" if len(best) == 1 else "tied for best and beat"
            best_value = format_value(metric, block["methods"][best[0]][metric]["median"])
            out[metric] = f"{winner} {verb} {long_name(ref)} in {title} (median {best_value} vs {ref_value}{unit})."
    return out


def _median_iqr_text(metric: str, s: dict) -> str:
    if s["median"] is None:
        return "n/a"
    return f"{format_value(metric, s['median'])} [{format_value(metric, s['q25'])}, {format_value(metric, s['q75'])}]"


def _column_title(metric: str) -> str:
    unit = UNITS.get(metric, "").strip()
    return f"{METRIC_TITLES.get(metric, metric)}{f' ({unit})' if unit else ''} median [IQR]"


def _variant_table(summary: dict, variant: str) -> list[str]:
    block = summary["variants"][variant]
    metrics = summary["metrics"]
    methods = list(block["methods"])
    n = max(block["n_slices"].values()) if block["n_slices"] else 0
    lines = [f"{VARIANT_TITLES.get(variant, variant)}, n = {n} slices per method",
             f"({block['description']})",
             "", "| Method | " + " | ".join(_column_title(m) for m in metrics) + " |",
             "|---" * (len(metrics) + 1) + "|"]
    for m in methods:
        cells = [_median_iqr_text(metric, block["methods"][m][metric]) for metric in metrics]
        lines.append(f"| {figures.method_name(m)} | " + " | ".join(cells) + " |")
    if block["wilcoxon"]:
        ref = figures.method_name(summary["reference"]).lower()
        lines += ["", f"One-sided Wilcoxon signed-rank p, \"{ref} better than X\" (n pairs):", "",
                  "| X | " + " | ".join(METRIC_TITLES.get(m, m) for m in metrics) + " |",
                  "|---" * (len(metrics) + 1) + "|"]
        for m, tests in block["wilcoxon"].items():
            cells = [f"{format_p(tests[metric]['p'])} ({tests[metric]['n_pairs']})" for metric in metrics]
            lines.append(f"| {figures.method_name(m)} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- {s}" for s in verdicts(summary, variant).values()]
    return lines


def summary_table(summary: dict, variants: list[str] | None = None) -> str:
    """Markdown tables (medians [IQR], p-values) and the verdicts, primary variant first."""
    order = variants or [summary["primary_variant"]] + [v for v in summary["variants"] if v != summary["primary_variant"]]
    lines: list[str] = []
    for v in order:
        if v in summary["variants"]:
            lines += _variant_table(summary, v) + [""]
    return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------------------
# Files


def _scores_by_metric(scores, variant: str, metrics: list[str]) -> dict[str, dict[str, np.ndarray]]:
    table = scores.select(variant=variant)
    return {metric: {m: table.select(method=m)[metric] for m in table.methods()} for metric in metrics}


def _example_scores(scores, example) -> dict[str, dict[str, float]]:
    table = scores.select(variant="dropped")
    mask = (table["volume"] == example.volume) & (table["frame"] == example.frame) & (table["slice"] == example.slice)
    out = {}
    for i in np.nonzero(mask)[0]:
        out[table["method"][i]] = {metric: float(table[metric][i]) for metric in ("ssim", "psnr", "vif")}
    return out


def write_figures(folder: pathlib.Path, evaluation, summary: dict) -> dict[str, list[str]]:
    """figures/*.png; returns the relative paths per section ('boxplots_<variant>', 'qualitative', 'through_plane')."""
    fig_dir = folder / "figures"
    fig_dir.mkdir(exist_ok=True)
    written: dict[str, list[str]] = {}
    for variant in summary["variants"]:
        rel = f"figures/boxplots_{variant}.png"
        figures.boxplots(_scores_by_metric(evaluation.scores, variant, summary["metrics"]), folder / rel,
                         VARIANT_TITLES.get(variant, variant))
        written[f"boxplots_{variant}"] = [rel]
    written["qualitative"] = []
    for i, example in enumerate(evaluation.examples):
        rel = f"figures/qualitative_{i}.png"
        figures.qualitative_panel(example, folder / rel, _example_scores(evaluation.scores, example))
        written["qualitative"].append(rel)
    written["through_plane"] = []
    if evaluation.through_plane is not None:
        rel = "figures/through_plane.png"
        figures.through_plane_figure(evaluation.through_plane, folder / rel)
        written["through_plane"].append(rel)
    return written


def _md_table_to_html(lines: list[str]) -> str:
    rows = [ln for ln in lines if ln.startswith("|") and not ln.startswith("|---")]
    out = ["<table>"]
    for i, row in enumerate(rows):
        cells = [c.strip() for c in row.strip("|").split("|")]
        tag = "th" if i == 0 else "td"
        out.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _variant_html(summary: dict, variant: str, written: dict[str, list[str]]) -> str:
    lines = _variant_table(summary, variant)
    tables, current = [], []
    for ln in lines:
        if ln.startswith("|"):
            current.append(ln)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    block = summary["variants"][variant]
    parts = [f"<h2>{html.escape(VARIANT_TITLES.get(variant, variant))}</h2>",
             f"<p>{html.escape(block['description'][:1].upper() + block['description'][1:])}.</p>",
             "<ul class=verdicts>" + "".join(f"<li>{html.escape(s)}</li>" for s in verdicts(summary, variant).values()) + "</ul>",
             "<h3>Median [interquartile range] per method</h3>", _md_table_to_html(tables[0])]
    if len(tables) > 1:
        parts += ["<h3>One-sided Wilcoxon signed-rank test: autoencoder better than X (p, n pairs)</h3>",
                  _md_table_to_html(tables[1])]
    for rel in written.get(f"boxplots_{variant}", []):
        parts.append(f'<p><img src="{html.escape(rel)}" alt="boxplots, {html.escape(variant)}"></p>')
    return "\n".join(parts)


STYLE = """
body { font-family: sans-serif; max-width: 1250px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; }
th { background: #eee; }
img { max-width: 100%; }
ul.verdicts li { margin: 0.3em 0; font-size: 1.05em; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def render_html(summary: dict, written: dict[str, list[str]]) -> str:
    primary = summary["primary_variant"]
    others = [v for v in summary["variants"] if v != primary]
    settings = summary.get("settings", {})
    setting_rows = []
    for key in ("checkpoint", "data_dir", "split", "crop", "target_spacing_mm", "device", "date"):
        if key in settings:
            setting_rows.append((key, settings[key]))
    counts = settings.get("counts", {})
    for key, value in counts.items():
        setting_rows.append((f"n {key.replace('_', ' ')}", value))
    if "seconds" in settings:
        setting_rows.append(("seconds", ", ".join(f"{k} {v}" for k, v in settings["seconds"].items())))
    if "versions" in settings:
        setting_rows.append(("versions", ", ".join(f"{k} {v}" for k, v in settings["versions"].items())))
    setting_rows += [("significance level", summary["significance_level"]),
                     ("PSNR cap (dB)", summary["psnr_cap_db"])]
    parts = [
        "<!DOCTYPE html>", "<html lang=en><head><meta charset=utf-8>",
        "<title>jaxsr evaluation report</title>", f"<style>{STYLE}</style></head><body>",
        "<h1>jaxsr evaluation: autoencoder latent interpolation vs linear, B-spline and Lanczos</h1>",
        "<p>Every other slice of each test volume was dropped and reconstructed from its two neighbours; "
        "each reconstruction is scored against the dropped original (SSIM, PSNR, VIF; higher is better). "
        "Per-slice scores: <a href=\"scores.csv\">scores.csv</a>; statistics: "
        "<a href=\"summary.json\">summary.json</a>.</p>",
        _variant_html(summary, primary, written),
    ]
    if written.get("qualitative"):
        parts.append("<h2>Examples</h2><p>Top: the two kept neighbours, the dropped original and each method's "
                     "reconstruction. Bottom: reconstruction minus original (blue negative, red positive; "
                     "same symmetric limits for every method).</p>")
        parts += [f'<p><img src="{html.escape(r)}" alt="qualitative example"></p>' for r in written["qualitative"]]
    if written.get("through_plane"):
        parts.append("<h2>Through-plane view</h2><p>A long-axis cut through one frame, drawn in millimetres: the "
                     "acquired thick slices (nearest neighbour) and the upsampled stacks.</p>")
        parts += [f'<p><img src="{html.escape(r)}" alt="through-plane view"></p>' for r in written["through_plane"]]
    for v in others:
        parts.append(_variant_html(summary, v, written))
    parts.append("<h2>Settings</h2><table>" + "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in setting_rows) + "</table>")
    if settings.get("volumes"):
        parts.append("<p>Volumes: " + html.escape(", ".join(settings["volumes"])) + "</p>")
    if "config" in settings:
        parts.append("<h3>Model configuration</h3><pre>" + html.escape(json.dumps(settings["config"], indent=2, default=str)) + "</pre>")
    parts.append("<p>Statistics: medians and quartiles use numpy's linear percentiles; p-values come from "
                 "scipy.stats.wilcoxon(ae, x, alternative='greater') on slices paired by volume, frame and slice, with "
                 "scipy's defaults (zero differences discarded, exact or normal approximation chosen automatically). "
                 f"PSNR is capped at {summary['psnr_cap_db']:g} dB for every method so exact reconstructions tie.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_outputs(folder: pathlib.Path, evaluation: Any, summary: dict) -> None:
    """scores.csv, summary.json (with the verdict sentences), figures and index.html into `folder`.

    `evaluation`: a jaxsr.evaluate.Evaluation; `summary`: jaxsr.stats.summarise's, with settings.
    """
    evaluation.scores.write_csv(folder / "scores.csv")
    for variant in summary["variants"]:
        summary["variants"][variant]["verdicts"] = verdicts(summary, variant)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    write_report(folder, evaluation, summary)


def _json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_report(folder: str | os.PathLike, evaluation: Any, summary: dict) -> pathlib.Path:
    """Writes figures/*.png and index.html into `folder`; returns the index.html path."""
    folder = pathlib.Path(folder)
    written = write_figures(folder, evaluation, summary)
    index = folder / "index.html"
    index.write_text(render_html(summary, written), encoding="utf-8")
    return index
