"""The report stage: ``results/report.html``, one self-contained page per run that opens from
disk (no server, no network) on the run's figures, each beside its caption, and an explorer of
the summary store.

The explorer draws with Vega-Lite (through vega-embed): a declarative grammar whose charts are
JSON specs built in the page from the embedded data, so the page needs no Python at view time;
its scenegraph can be read back by a browser test; and its JavaScript comes with Snakemake (whose
own report draws the rule graph with it), so the page adds no dependency and no download. A
reader chooses models, a view and a measurement of that view (``VIEWS``):

* ``bins``: a per-bin measurement over steps, one line per token-frequency bin, one panel per model;
* ``heatmap``: the same as a (step × bin) heat map;
* ``overall``: a measurement over all tokens over steps, one line per model;
* ``single_step``: the update stage's measures over steps, one marker per update batch.

The summary's values are embedded once, flat, at ``DIGITS`` significant digits (``data``); the
page builds each chart's rows from them, and shows the variable's meaning, units and the paper it
serves beside it. Figures are embedded as PNG with their captions rendered from
reStructuredText (docutils), each re-encoded with a palette of at most 256 colours
(``compact_png``): a third of the size of matplotlib's true-colour PNG, and no different to the
eye at the figures' resolution.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import xarray as xr

from pipeline.schema import SUMMARY

#: The explorer's views: label, and the dimensions of the variables each one draws.
VIEWS = {
    "bins": ("per-bin curves over steps", ("model", "step", "bin")),
    "heatmap": ("(step × bin) heat map", ("model", "step", "bin")),
    "overall": ("all tokens over steps", ("model", "step")),
    "single_step": ("single-step measures", ("model", "step", "update_batch")),
}
#: Significant digits of the embedded values (the summary holds float32: about 7).
DIGITS = 6
TEMPLATE = Path(__file__).with_name("report.html")
VEGA = ("vega/vega.js", "vega-lite/vega-lite.js", "vega-embed/vega-embed.js")


@dataclass(frozen=True)
class Figure:
    """One figure of the page: its name, report category, caption (reStructuredText) and PNG."""

    name: str
    category: str
    caption: str
    png: bytes


def measurements(ds: xr.Dataset) -> dict[str, list[str]]:
    """The variables of each view: numeric, of exactly the view's dimensions, not all NaN."""
    out = {}
    for view, (_, dims) in VIEWS.items():
        out[view] = [
            name
            for name, v in ds.data_vars.items()
            if v.dims == dims and v.dtype.kind == "f" and bool(np.isfinite(v.values).any())
        ]
    return out


def _flat(values: np.ndarray) -> str:
    """A JSON array of ``values`` flattened, at ``DIGITS`` significant digits, NaN as null."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    text = np.char.mod(f"%.{DIGITS}g", flat).astype(object)  # not fixed-width: "null" fits
    text[~np.isfinite(flat)] = "null"
    return "[" + ",".join(text.tolist()) + "]"


def data(ds: xr.Dataset) -> str:
    """The explorer's data as JSON: the coordinates of the views' dimensions, each model's
    colour (the figures'), and every drawn variable (dims, units, meaning, flat values)."""
    from pipeline.plots.common import model_colors

    names = sorted({n for names in measurements(ds).values() for n in names})
    dims = ("model", "step", "bin", "update_batch")
    coords = {d: ds[d].values.tolist() for d in dims if d in ds.coords}
    colors = model_colors(coords["model"])
    declared = {v.name: v for v in SUMMARY}
    variables = []
    for name in names:
        v, d = ds[name], declared.get(name)
        meta = {
            "dims": list(v.dims),
            "units": d.units if d else str(v.attrs.get("units", "")),
            "meaning": d.meaning if d else str(v.attrs.get("long_name", "")),
            "serves": d.serves if d else str(v.attrs.get("serves", "")),
        }
        variables.append(
            f'{json.dumps(name)}:{{{json.dumps(meta)[1:-1]},"values":{_flat(v.values)}}}'
        )
    head = {
        "coords": {d: [str(c) if d == "model" else c for c in vs] for d, vs in coords.items()},
        "colors": {m: _hex(c) for m, c in colors.items()},
        "views": {
            k: {"label": label, "variables": measurements(ds)[k]} for k, (label, _) in VIEWS.items()
        },
    }
    return json.dumps(head)[:-1] + ',"variables":{' + ",".join(variables) + "}}"


def _hex(color) -> str:
    from matplotlib.colors import to_hex

    return to_hex(color)


def caption_html(rst: str) -> str:
    """A caption's reStructuredText as an HTML fragment."""
    from docutils.core import publish_parts

    settings = {"report_level": 5, "halt_level": 5, "math_output": "MathML"}
    return publish_parts(rst, writer="html5", settings_overrides=settings)["body"]


def _vega() -> str:
    """vega, vega-lite and vega-embed as Snakemake ships them (for its own report), inline."""
    from snakemake.assets import Assets

    parts = []
    for path in VEGA:
        licence = Assets.get_content(path.split("/")[0] + "/LICENSE")
        parts.append(f"/* {path}: {licence.splitlines()[0]} (see its LICENSE) */\n")
        parts.append(Assets.get_content(path).replace("</script", "<\\/script"))
    return "\n".join(parts)


def _run_header(ds: xr.Dataset) -> str:
    a = ds.attrs
    run = a.get("run") or "default"
    files = ", ".join(a.get("config_files") or []) or "config.yaml"
    models = ", ".join(str(m) for m in ds.model.values)
    steps = ds.sizes.get("step", 0)
    rows = [
        ("run", f"{run} ({a.get('results', 'results')}/)"),
        ("config", files),
        ("config sha256", str(a.get("config_sha256", ""))[:16] + "…"),
        ("models", models),
        (
            "steps",
            f"{steps} ({int(ds.step.values[0])} to {int(ds.step.values[-1])})" if steps else "none",
        ),
        ("pipeline", str(a.get("pipeline_version", ""))),
    ]
    return "".join(f"<tr><th>{k}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)


def compact_png(png: bytes) -> bytes:
    """``png`` with a palette of at most 256 colours (no dithering, which would speckle flat
    areas), or ``png`` itself where that is not smaller."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        palette = image.convert("RGB").quantize(256, dither=Image.Dither.NONE)
    out = io.BytesIO()
    palette.save(out, format="PNG", optimize=True)
    return out.getvalue() if out.tell() < len(png) else png


def _gallery(figures: list[Figure]) -> str:
    out, category = [], None
    for f in figures:
        if f.category != category:
            category = f.category
            out.append(f"<h2>{html.escape(category)}</h2>")
        png = base64.b64encode(compact_png(f.png)).decode()
        out.append(
            f'<figure class="figure" id="figure-{f.name}"><img alt="{f.name}" '
            f'src="data:image/png;base64,{png}"><figcaption><h3>{f.name}</h3>'
            f"{caption_html(f.caption)}</figcaption></figure>"
        )
    return "\n".join(out)


def page(ds: xr.Dataset, figures: list[Figure], created: datetime | None = None) -> str:
    """The page of a run: its summary ``ds`` (names as coordinates) and its ``figures``."""
    created = created or datetime.now(UTC)
    title = f"{ds.attrs.get('run') or 'default'} run: learning-dynamics report"
    parts = {
        "/*TITLE*/": html.escape(title),
        "/*RUN*/": _run_header(ds),
        "/*CREATED*/": created.strftime("%Y-%m-%d %H:%M UTC"),
        "/*GALLERY*/": _gallery(figures),
        "/*DATA*/": data(ds).replace("</", "<\\/"),
        "/*VEGA*/": _vega(),
    }
    text = TEMPLATE.read_text()
    for key, value in parts.items():
        text = text.replace(key, value)
    return text


def write(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary sibling renamed into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def build(summary: str, figures: dict[str, dict], out: str) -> None:
    """Write the page of the summary store at ``summary`` to ``out``; ``figures``: name →
    ``{"category", "caption" (a file), "png" (a file)}``, in report order."""
    from pipeline.store import open_labeled

    ds = open_labeled(summary).load()
    items = [
        Figure(n, f["category"], Path(f["caption"]).read_text(), Path(f["png"]).read_bytes())
        for n, f in figures.items()
    ]
    write(out, page(ds, items))
