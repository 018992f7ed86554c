"""The evaluation report: verdict sentences, text tables and a self-contained index.html.

`summary_table(summary)` is the plain-text (Markdown) table the CLI and the
demo print. `verdicts(summary, variant)` gives one plain sentence per metric:
for the primary variant (dropped slices, the verdict) which method won, also
when the autoencoder loses; the all-slices variant is an appendix that ranks
nothing (see jaxsr.scores). `write_outputs` writes scores.csv and
summary.json, draws the figures (jaxsr.figures) and writes index.html next to
them; images are referenced by relative path, so the folder can be moved or
zipped whole.
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
    "ae_residual": "the autoencoder with its residuals added back",
    "linear": "linear interpolation",
    "bspline": "B-spline interpolation",
    "lanczos": "Lanczos interpolation",
}
METRIC_TITLES = {"ssim": "SSIM", "psnr": "PSNR", "vif": "VIF"}
UNITS = {"psnr": " dB"}
VARIANT_TITLES = {
    "dropped": "Reconstructed slices (primary: the verdict)",
    "all": "Appendix: all slices (paper-compatible variant)",
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
    """One sentence per metric.

    The primary variant is the verdict: who won, by how much, and whether it
    is significant. Any other variant ranks nothing, because the baselines
    return the acquired slices themselves there (a perfect score by
    construction): its sentences give the medians and say so.
    """
    variant = variant or summary["primary_variant"]
    block = summary["variants"][variant]
    sentence = _verdict if variant == summary["primary_variant"] else _appendix_sentence
    return {metric: sentence(summary, block, metric) for metric in block["winners"]}


def _verdict(summary: dict, block: dict, metric: str) -> str:
    ref, alpha, w = summary["reference"], summary["significance_level"], block["winners"][metric]
    title, unit = METRIC_TITLES.get(metric, metric), UNITS.get(metric, "")
    best = w["best"]
    ref_value = format_value(metric, w["reference_median"])
    if not best:
        return f"No method has a {title} score."
    if w["reference_wins"]:
        other = w["best_other"]
        sentence = (f"{long_name(ref, True)} won in {title} (median {ref_value} vs "
                    f"{format_value(metric, w['best_other_median'])}{unit} for {long_name(other)}, the best of the others)")
        tests = block["wilcoxon"]
        weak = [m for m in tests if tests[m][metric]["p"] is None or tests[m][metric]["p"] >= alpha]
        if not tests:
            return sentence + "."
        if not weak:
            return sentence + (f"; one-sided Wilcoxon signed-rank p < {alpha:g} against every other method "
                               f"(largest p = {format_p(w['max_p'])}).")
        detail = ", ".join(f"{long_name(m)} (p = {format_p(tests[m][metric]['p'])})" for m in weak)
        return sentence + f"; but its advantage is not significant at p < {alpha:g} over {detail}."
    if ref in best:
        others = [long_name(m) for m in best if m != ref]
        return f"{long_name(ref, True)} tied with {_join(others)} in {title} (median {ref_value}{unit})."
    winner = _join([long_name(m) for m in best])
    verb = "beat" if len(best) == 1 else "tied for best and beat"
    best_value = format_value(metric, block["methods"][best[0]][metric]["median"])
    return f"{winner[0].upper() + winner[1:]} {verb} {long_name(ref)} in {title} (median {best_value} vs {ref_value}{unit})."


def _appendix_sentence(summary: dict, block: dict, metric: str) -> str:
    title, unit = METRIC_TITLES.get(metric, metric), UNITS.get(metric, "")
    medians = ", ".join(f"{long_name(m)} {format_value(metric, s[metric]['median'])}{unit}" for m, s in block["methods"].items())
    copies = {m: n for m, n in block.get("n_identical", {}).items() if n}
    if not copies:
        return f"{title} over all slices, medians: {medians}; no verdict (the primary table is the verdict)."
    detail = _join([f"{long_name(m)} {n} of {block['n_slices'][m]}" for m, n in copies.items()])
    return (f"{title} over all slices, medians: {medians}; no verdict: these methods returned slices unchanged "
            f"({detail}), which score perfectly by construction.")


# ----------------------------------------------------------------------------
# Tables, as rows shared by the printed summary and index.html

Table = tuple[list[str], list[list[str]]]


def _median_iqr_text(metric: str, s: dict) -> str:
    if s["median"] is None:
        return "n/a"
    return f"{format_value(metric, s['median'])} [{format_value(metric, s['q25'])}, {format_value(metric, s['q75'])}]"


def _column_title(metric: str) -> str:
    unit = UNITS.get(metric, "").strip()
    return f"{METRIC_TITLES.get(metric, metric)}{f' ({unit})' if unit else ''} median [IQR]"


def _median_table(summary: dict, variant: str) -> Table:
    """Medians [IQR] per method; outside the primary variant also how many slices came back unchanged."""
    block, metrics = summary["variants"][variant], summary["metrics"]
    unchanged = variant != summary["primary_variant"] and "n_identical" in block
    header = ["Method"] + [_column_title(m) for m in metrics] + (["Slices returned unchanged"] if unchanged else [])
    rows = []
    for m, stats in block["methods"].items():
        row = [figures.method_name(m)] + [_median_iqr_text(metric, stats[metric]) for metric in metrics]
        if unchanged:
            row.append(f"{block['n_identical'][m]} of {block['n_slices'][m]}")
        rows.append(row)
    return header, rows


def _wilcoxon_table(summary: dict, variant: str) -> Table | None:
    block, metrics = summary["variants"][variant], summary["metrics"]
    if not block["wilcoxon"]:
        return None
    header = ["Compared with"] + [f"{METRIC_TITLES.get(m, m)} p (pairs)" for m in metrics]
    rows = [[figures.method_name(m)] + [f"{format_p(tests[metric]['p'])} ({tests[metric]['n_pairs']})" for metric in metrics]
            for m, tests in block["wilcoxon"].items()]
    return header, rows


def _markdown(table: Table) -> list[str]:
    header, rows = table
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"] + ["| " + " | ".join(r) + " |" for r in rows]


def _n_slices(block: dict) -> int:
    return max(block["n_slices"].values()) if block["n_slices"] else 0


def _heading(summary: dict, variant: str) -> str:
    return f"{VARIANT_TITLES.get(variant, variant)}, n = {_n_slices(summary['variants'][variant])} slices per method"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _variant_text(summary: dict, variant: str) -> list[str]:
    block = summary["variants"][variant]
    lines = [_heading(summary, variant), _sentence(block["description"]), ""] + _markdown(_median_table(summary, variant))
    if variant != summary["primary_variant"]:
        return lines  # an appendix: no tests, no ranking (see `verdicts`)
    tests = _wilcoxon_table(summary, variant)
    if tests:
        ref = figures.method_name(summary["reference"]).lower()
        lines += ["", f"One-sided Wilcoxon signed-rank p, \"{ref} better than X\" (n pairs):", ""] + _markdown(tests)
    return lines + [""] + [f"- {s}" for s in verdicts(summary, variant).values()]


def summary_table(summary: dict, variants: list[str] | None = None) -> str:
    """Markdown tables (medians [IQR], p-values) and the verdicts; the other variants follow as appendices."""
    order = variants or [summary["primary_variant"]] + [v for v in summary["variants"] if v != summary["primary_variant"]]
    lines: list[str] = []
    for v in order:
        if v in summary["variants"]:
            lines += _variant_text(summary, v) + [""]
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
                         _heading(summary, variant))
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


def _html_table(table: Table) -> str:
    header, rows = table
    head = "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in header) + "</tr>"
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>\n{head}\n{body}\n</table>"


def _images(paths: list[str], alt: str) -> list[str]:
    return [f'<p><img src="{html.escape(rel)}" alt="{html.escape(alt)}"></p>' for rel in paths]


BOXPLOT_CAPTION = ("Boxes span the 25th to 75th percentile with the median as a black line; whiskers reach "
                   "the furthest slice within 1.5 IQR of the box; dots are the slices beyond.")


def _variant_html(summary: dict, variant: str, written: dict[str, list[str]]) -> str:
    block = summary["variants"][variant]
    parts = [f"<h2>{html.escape(_heading(summary, variant))}</h2>",
             f"<p>{html.escape(_sentence(block['description']))}</p>"]
    if variant == summary["primary_variant"]:
        parts.append("<ul class=verdicts>" + "".join(f"<li>{html.escape(s)}</li>" for s in verdicts(summary, variant).values()) + "</ul>")
    parts += ["<h3>Median [interquartile range] per method</h3>", _html_table(_median_table(summary, variant))]
    tests = _wilcoxon_table(summary, variant) if variant == summary["primary_variant"] else None
    if tests:
        ref = figures.method_name(summary["reference"]).lower()
        parts += ["<h3>Is the autoencoder better? One-sided Wilcoxon signed-rank test</h3>",
                  f"<p>p-value of the test that the {html.escape(ref)} scores higher than the method in the row, on "
                  "slices paired by volume, frame and slice (number of pairs in parentheses); p below "
                  f"{summary['significance_level']:g} counts as significant.</p>", _html_table(tests)]
    boxplots = written.get(f"boxplots_{variant}", [])
    if boxplots:
        parts += _images(boxplots, f"boxplots of SSIM, PSNR and VIF per method, {variant} slices")
        parts.append(f"<p class=caption>{html.escape(BOXPLOT_CAPTION)}</p>")
    return "\n".join(parts)


STYLE = """
body { font-family: sans-serif; max-width: 1250px; margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.4; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; }
th { background: #eee; }
img { max-width: 100%; }
ul.verdicts li { margin: 0.3em 0; font-size: 1.05em; }
p.caption { color: #555; font-size: 0.9em; margin-top: -0.5em; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""

SETTING_LABELS = {
    "checkpoint": "checkpoint",
    "data_dir": "data",
    "split": "split",
    "crop": "in-plane crop",
    "target_spacing_mm": "in-plane spacing (mm)",
    "device": "device",
    "date": "date",
}
COUNT_LABELS = {
    "volumes": "volumes scored",
    "frames": "frames scored",
    "slices_scored": "dropped slices scored, per method",
    "slices_scored_all": "slices scored in the appendix, per method",
    "slices_skipped_no_neighbour": "last slices with no right neighbour (not scored)",
    "volumes_skipped": "volumes skipped (fewer than 3 slices)",
}


def _setting_rows(summary: dict) -> list[tuple[str, str]]:
    settings = summary.get("settings", {})
    rows = [(label, str(settings[key])) for key, label in SETTING_LABELS.items() if key in settings]
    for key, value in settings.get("counts", {}).items():
        text = (", ".join(value) or "none") if isinstance(value, list) else str(value)
        rows.append((COUNT_LABELS.get(key, key.replace("_", " ")), text))
    if "seconds" in settings:
        rows.append(("time (s)", ", ".join(f"{figures.method_name(k)} {v:.1f}" for k, v in settings["seconds"].items())))
    if "versions" in settings:
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in settings["versions"].items())))
    return rows + [("significance level", f"{summary['significance_level']:g}"),
                   ("PSNR cap (dB)", f"{summary['psnr_cap_db']:g}")]


# (written key, heading, caption, alt text), in page order after the verdict.
FIGURE_SECTIONS = (
    ("qualitative", "Examples",
     "One dropped slice per volume. Top: its two kept neighbours, the dropped original and each method's "
     "reconstruction, with that slice's SSIM and PSNR. Bottom: reconstruction minus original (blue negative, "
     "red positive; the same symmetric limits for every method, given on the left).",
     "a dropped slice and each method's reconstruction"),
    ("through_plane", "Through-plane view",
     "A long-axis cut through one frame, drawn to scale in millimetres: the acquired thick slices (each shown "
     "as a block one slice spacing tall) and the stacks upsampled by the autoencoder and by linear "
     "interpolation, acquired slices kept as they are.",
     "through-plane view"),
)


def render_html(summary: dict, written: dict[str, list[str]]) -> str:
    primary = summary["primary_variant"]
    settings = summary.get("settings", {})
    split = settings.get("split", "held-out")
    cap = f"{summary['psnr_cap_db']:g}"
    parts = [
        "<!DOCTYPE html>", "<html lang=en><head><meta charset=utf-8>",
        "<title>jaxsr evaluation report</title>", f"<style>{STYLE}</style></head><body>",
        "<h1>jaxsr evaluation: autoencoder latent interpolation vs linear, B-spline and Lanczos interpolation</h1>",
        f"<p>Every other slice of each {html.escape(split)} volume was dropped and reconstructed from its two kept "
        "neighbours by each method, and each reconstruction is scored against the dropped original. "
        "SSIM: structural similarity; PSNR: peak signal-to-noise ratio in dB; VIF: visual information fidelity; "
        f"for all three higher is better, and an exact copy scores 1, {cap} dB (PSNR is capped there) and 1. "
        "IQR: interquartile range (25th to 75th percentile). "
        "Per-slice scores: <a href=\"scores.csv\">scores.csv</a>; statistics: "
        "<a href=\"summary.json\">summary.json</a>.</p>",
        _variant_html(summary, primary, written),
    ]
    for key, title, caption, alt in FIGURE_SECTIONS:
        if written.get(key):
            parts += [f"<h2>{title}</h2><p>{html.escape(caption)}</p>"] + _images(written[key], alt)
    for v in summary["variants"]:
        if v != primary:
            parts.append(_variant_html(summary, v, written))
    parts.append("<h2>Settings</h2><table>" + "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in _setting_rows(summary)) + "</table>")
    if settings.get("volumes"):
        parts.append("<p>Volumes: " + html.escape(", ".join(settings["volumes"])) + "</p>")
    if "config" in settings:
        parts.append("<h3>Model configuration</h3><pre>" + html.escape(json.dumps(settings["config"], indent=2, default=str)) + "</pre>")
    parts.append("<p>Statistics: medians and quartiles use numpy's linear percentiles; p-values come from "
                 "scipy.stats.wilcoxon(ae, x, alternative='greater') on slices paired by volume, frame and slice, with "
                 "scipy's defaults (zero differences discarded, exact or normal approximation chosen automatically). "
                 f"PSNR is capped at {cap} dB for every method so exact reconstructions tie.</p>")
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
