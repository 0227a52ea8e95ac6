"""The docs' generated blocks (pipeline.tables): every page holds exactly what the
declarations give, and every block has a page; the model entries' table matches the schema."""

from __future__ import annotations

from pipeline import tables
from pipeline.config.declarations import MODEL_KEYS
from pipeline.config.load import schema

REPO = tables.ROOT
PAGES = tables.pages()


def test_generated_blocks_are_what_the_declarations_give():
    declared = tables.declared_blocks()
    held = {}
    for page in PAGES:
        for name, body in tables.blocks_in(page.read_text()).items():
            held.setdefault(name, []).append((page, body))
    missing = sorted(set(declared) - set(held))
    assert not missing, f"no page holds the generated blocks {missing}"
    stale = [
        f"{page.relative_to(REPO)}: {name}"
        for name, body in declared.items()
        for page, text in held[name]
        if text != body
    ]
    assert not stale, "out of date, run `python -m pipeline.tables`: " + ", ".join(stale)
    unknown = sorted(n for n in held if n not in declared and not n.startswith("run:"))
    assert not unknown, f"blocks that nothing generates: {unknown}"


def test_every_result_table_has_its_place():
    from pipeline.findings import TABLES

    held = {n for page in PAGES for n in tables.blocks_in(page.read_text())}
    assert {f"run:{n}" for n in TABLES} <= held
    assert {n for n in held if n.startswith("run:")} <= {f"run:{n}" for n in TABLES}


def test_the_model_keys_table_is_the_schemas():
    entry = schema()["properties"]["models"]["additionalProperties"]
    by_source = {"toy": entry["then"]["properties"]}
    by_source["hub"] = entry["else"]["then"]["properties"]
    by_source["local"] = entry["else"]["else"]["properties"]
    for source, properties in by_source.items():
        declared = {k for k, (sources, _) in MODEL_KEYS.items() if source in sources}
        assert declared == set(properties), (source, declared ^ set(properties))


def test_rewrite_replaces_only_known_blocks():
    text = "a\n<!-- x:y -->\nold\n<!-- /x:y -->\n<!-- run:z -->\nkept\n<!-- /run:z -->\n"
    new = tables.rewrite(text, {"x:y": "new | table"})
    assert new == text.replace("old", "new | table")
    assert tables.blocks_in(new) == {"x:y": "new | table", "run:z": "kept"}
