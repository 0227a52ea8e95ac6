"""The README's tables, rendered from the declarations: the stored variables
(``pipeline.schema``) and the configuration keys (``pipeline.config.declarations``).
``python -m pipeline.tables`` prints them between the markers that delimit them in the README,
and a test checks that the README holds exactly these."""

from __future__ import annotations

from pipeline.schema import STORES, TOKEN_MEASUREMENTS, UPDATE_SUMMARY, Variable, binned

#: The README's generated tables: the stores, and the summary's update variables.
README_TABLES = {
    "extract": "extract",
    "update": "update",
    "reduce": "reduce",
    "summary-update": UPDATE_SUMMARY,
    "fits": "fits",
}


def markdown_table(store: str | tuple[Variable, ...]) -> str:
    """The README's table of one store's variables (generated; a test checks the README).

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
    """The README's table of every declared configuration key: its default and meaning."""
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


def readme_tables() -> str:
    """Every generated table with the markers that delimit it in the README."""
    blocks = [
        f"<!-- schema:{name} -->\n{markdown_table(which)}\n<!-- /schema:{name} -->"
        for name, which in README_TABLES.items()
    ]
    return "\n\n".join([*blocks, f"<!-- config:keys -->\n{config_table()}\n<!-- /config:keys -->"])


if __name__ == "__main__":  # python -m pipeline.tables: the README's tables
    print(readme_tables())
