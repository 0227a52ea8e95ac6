"""The docs' generated blocks: rendered from the declarations (the stored variables of
``pipeline.schema``, the configuration keys of ``pipeline.config.declarations``, the figures of
``pipeline.plots.FIGURES``) and from finished runs (``pipeline.findings``).

A block sits between two markers in a page of ``docs/`` (or the README), ``<!-- NAME -->`` and
``<!-- /NAME -->``. ``python -m pipeline.tables`` rewrites every declared block in place;
``python -m pipeline.tables --run results`` also rewrites the run's tables and copies its figures
into ``docs/_static/figures/`` (a run named by ``run:`` is read from ``results/{run}/``). The
tests check that the pages hold exactly these blocks.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from pipeline.schema import (
    STORES,
    SUMMARY_OWN,
    TOKEN_MEASUREMENTS,
    UPDATE_SUMMARY,
    Variable,
    binned,
)

#: The repository's root, its docs, and the pages that hold generated blocks.
ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FIGURE_DIR = DOCS / "_static" / "figures"

#: The generated tables of stored variables: the stores, the summary's update variables and
#: what only the summary holds.
STORE_TABLES = {
    "extract": "extract",
    "update": "update",
    "reduce": "reduce",
    "seeds": "seeds",
    "summary-update": UPDATE_SUMMARY,
    "summary": SUMMARY_OWN,
    "fits": "fits",
}


def markdown_table(store: str | tuple[Variable, ...]) -> str:
    """The docs' table of one store's variables (generated; a test checks the pages).

    In the ``reduce`` table the four variables derived from each per-token measurement m are
    shown once, as rows for ``m``, ``overall(m)``, ``quantile(m)`` and ``quantile_overall(m)``.
    """
    lines = ["| variable | dims | units | meaning | serves |", "| --- | --- | --- | --- | --- |"]

    def row(name: str, v: Variable, meaning: str, units: str, serves: str) -> None:
        dims = ", ".join(v.dims) if v.dims else "—"
        opt = " (optional)" if v.optional else ""
        cells = [f"`{name}`", dims, units, meaning + opt, serves]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")

    families = (
        {w.name: v.name for v in TOKEN_MEASUREMENTS for w in binned(v)} if store == "reduce" else {}
    )
    shown = set()
    for v in STORES[store] if isinstance(store, str) else store:
        m = families.get(v.name)
        if m is None:
            row(v.name, v, v.meaning, v.units, v.serves)
            continue
        template = v.name.replace(m, "m", 1)
        if template not in shown:
            shown.add(template)
            meaning = v.meaning.replace(_meaning(m), "m", 1) + ", for each measurement m"
            row(template, v, meaning, "as m", "as m")
    return "\n".join(lines)


def _meaning(name: str) -> str:
    return next(v.meaning for v in TOKEN_MEASUREMENTS if v.name == name)


def config_table() -> str:
    """The docs' table of every declared configuration key: its default and meaning."""
    from pipeline import declare
    from pipeline.config import SECTIONS

    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    for path, cls in SECTIONS.items():
        for name, field in declare.keys(cls).items():
            kind = declare.kind(field)
            default = declare.defaults(cls)[name] if kind == "setting" else None
            shown = {"required": "required", "optional": "—"}.get(kind) or f"`{_yaml(default)}`"
            cells = [f"`{'.'.join((*path, name))}`", shown, declare.meaning(field)]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def _yaml(value) -> str:
    """A default as YAML writes it (null, true, [0.1, 0.5])."""
    import json

    if isinstance(value, list) and len(value) > 6:
        return f"[{value[0]:g}, {value[1]:g}, …, {value[-1]:g}]"
    return json.dumps(value, ensure_ascii=False)


def models_table() -> str:
    """The table of a model entry's keys (``MODEL_KEYS``): which sources take each."""
    from pipeline.config.declarations import MODEL_KEYS

    lines = ["| key | sources | meaning |", "| --- | --- | --- |"]
    for key, (sources, meaning) in MODEL_KEYS.items():
        cells = [f"`{key}`", ", ".join(sources), meaning]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def figures_table() -> str:
    """Every figure with what it shows, each linked to its page."""
    from pipeline.plots import FIGURES

    lines = ["| figure | shows |", "| --- | --- |"]
    lines += [f"| [`{n}`]({n}.md) | {_cell(s.shows)} |" for n, s in FIGURES.items()]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


#: The run that draws each toy experiment's figures (the ``run`` of its preset); every other
#: figure's image is the embedded default run's.
EXPERIMENT_RUNS = {
    "head_rank": "bottleneck",
    "spamlang": "bottleneck",
    "interventions": "interventions",
}


def _figure_run(spec) -> str:
    """The folder under ``results/`` of the run whose image of ``spec`` the docs show."""
    return EXPERIMENT_RUNS[spec.experiment] if spec.experiment else ""


def figure_header(name: str) -> str:
    """The generated top of a figure's page: its image, caption, function and command."""
    from pipeline.plots import FIGURES

    s = FIGURES[name]
    run = _figure_run(s)
    where = f"results/{run + '/' if run else ''}figures/{name}.png"
    command = (
        ".venv/bin/snakemake --cores 2 "
        + (f"--configfile config/{run}.yaml " if run else "")
        + where
    )
    return "\n".join(
        [
            f"![{name}](../_static/figures/{name}.png)",
            "",
            "```{eval-rst}",
            f".. include:: ../../{s.caption}",
            "```",
            "",
            f"**Shows**: {s.shows}.",
            "",
            f"**Drawn by** `plot_{name}` in `{s.source}` from the summary store alone. The image is "
            f"from {f'the run of `config/{run}.yaml`' if run else 'the embedded default run'}; "
            "draw it with",
            "",
            "<!-- not run: a figure of a finished run; the workflow tests draw every figure -->",
            "```bash",
            command,
            "```",
        ]
    )


def declared_blocks() -> dict[str, str]:
    """Every block rendered from the declarations, by marker name."""
    from pipeline.plots import FIGURES

    blocks = {f"schema:{n}": markdown_table(which) for n, which in STORE_TABLES.items()}
    blocks["config:keys"] = config_table()
    blocks["models:keys"] = models_table()
    blocks["figures:table"] = figures_table()
    blocks.update({f"figure:{n}": figure_header(n) for n in FIGURES})
    return blocks


def run_blocks(results: Path) -> dict[str, str]:
    """The docs' result tables of the runs under ``results`` that are there (the embedded
    default's summary at ``results/summary.zarr``, a named run's at
    ``results/{run}/summary.zarr``), by marker name."""
    from pipeline import findings
    from pipeline.summary import open_summary

    summaries = {}
    out = {}
    for name, (run, table) in findings.TABLES.items():
        path = results / (run or "") / "summary.zarr"
        if not path.exists():
            continue
        if run not in summaries:
            summaries[run] = open_summary(str(path)).load()
        out[f"run:{name}"] = table(summaries[run])
    return out


def _pattern(name: str) -> re.Pattern:
    n = re.escape(name)
    return re.compile(rf"(<!-- {n} -->\n)(.*?)(<!-- /{n} -->)", flags=re.S)


def blocks_in(text: str) -> dict[str, str]:
    """The generated blocks a page holds, by marker name."""
    found = re.findall(r"<!-- ([\w:.-]+) -->\n(.*?)<!-- /\1 -->", text, flags=re.S)
    return {name: body.rstrip("\n") for name, body in found}


def rewrite(text: str, blocks: dict[str, str]) -> str:
    """``text`` with each of its blocks that ``blocks`` names replaced by its rendering."""
    for name in blocks_in(text):
        if name in blocks:
            body = blocks[name]
            text = _pattern(name).sub(lambda m, b=body: m.group(1) + b + "\n" + m.group(3), text)
    return text


def pages() -> list[Path]:
    """The pages that may hold generated blocks: the README and every page of the docs."""
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def copy_figures(results: Path) -> None:
    """Copy each figure's PNG from the run that draws it into ``docs/_static/figures/``."""
    from pipeline.plots import FIGURES

    FIGURE_DIR.mkdir(parents=True, exist_ok=True)
    for name, s in FIGURES.items():
        src = results / _figure_run(s) / "figures" / f"{name}.png"
        if src.exists():
            shutil.copyfile(src, FIGURE_DIR / f"{name}.png")
        else:
            print(f"left alone: docs/_static/figures/{name}.png ({src} is missing)")


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pipeline.tables", description=__doc__)
    parser.add_argument(
        "--run", type=Path, help="also the result tables and figures of the runs here"
    )
    args = parser.parse_args(argv)
    blocks = declared_blocks()
    if args.run:
        found = run_blocks(args.run)
        from pipeline.findings import TABLES

        for name in TABLES:
            if f"run:{name}" not in found:
                print(f"left alone: the table {name} (its run is not under {args.run})")
        blocks |= found
        copy_figures(args.run)
    for page in pages():
        text = page.read_text()
        new = rewrite(text, blocks)
        if new != text:
            page.write_text(new)
            print(f"rewrote {page.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
