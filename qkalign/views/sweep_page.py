"""The sweep's page: one HTML file of a ``qkalign sweep`` store, its runs as a table and every sweep figure inline.

Static, like the analysis page (:mod:`.html_page`): inline SVG, inline style, no script, no network request.
``qkalign report OUT.zarr FILE.html`` writes it.
"""

from pathlib import Path

import numpy as np

from ..files.outputs import atomic_path
from .html_page import STYLE, _e, _figure, _note, _num, _table


def write_sweep_page(store, path):
    """Write the page of the sweep store ``store`` to ``path`` (whole or not at all); returns ``path``."""
    text = sweep_page_html(store)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def sweep_page_html(store):
    """The page of the sweep store ``store`` as one HTML document (str): a table of every run (its source,
    revision, step, status; for runs that finished, the adjacent-layer and to-anchor operator and subspace cosines
    and the verdict; for failed ones, the error) and the figures of :func:`~.sweep_figures.draw_sweep_figures`."""
    from .figure_files import FigureCollection
    from .sweep_figures import PANELS, draw_sweep_figures, open_sweep_store, run_table, statistic, step_of

    ds = open_sweep_store(store)  # one error line if ``store`` is not a sweep's store
    collection = FigureCollection()
    draw_sweep_figures(ds, collection)
    finished = {run["index"]: run for run in run_table(ds)}
    status = ds["status"].values
    rows = []
    for i in range(len(status)):
        source, revision = str(ds["source"].values[i]), str(ds["revision"].values[i])
        step = step_of(revision) if revision else step_of(source)
        row = [Path(source).name or source, revision or "–", "–" if step is None else str(step), str(status[i])]
        if i in finished:
            row += [_num(statistic(ds, i, name), "+.4f") for _, _, name, _ in PANELS]
            row.append(str(ds["verdict.label"].values[i]) if "verdict.label" in ds else "–")
        else:
            error = str(ds["error"].values[i]) if "error" in ds else ""
            row += ["–"] * len(PANELS) + [error[:160] or "–"]
        rows.append(row)
    columns = ["<source", "<revision", "step", "<status", "adjacent operator cos", "adjacent subspace cos",
               "to-anchor operator cos", "to-anchor subspace cos", "<verdict (or error)"]
    ok = int(np.sum(status == "ok"))
    body = [f"<h1>qkalign sweep: {_e(Path(str(store)).name)}</h1>",
            f"<p class='sub'>{len(status)} runs, {ok} finished; store {_e(store)}</p>",
            "<h2 id='runs'>Runs</h2>", _table(columns, rows),
            _note("To-anchor means leave the anchor out; subspace cosines are the mean principal-angle cosines of "
                  "the top-k eigensubspaces. Each figure draws only the runs that finished, against the training "
                  "step where the revisions name one."),
            "<h2 id='figures'>Figures</h2>"]
    body += [_figure(name, svg) for name, svg in collection.figures.items()]
    if not collection.figures:
        body.append(_note("No run has finished: nothing to draw."))
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>qkalign sweep: {_e(Path(str(store)).name)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
