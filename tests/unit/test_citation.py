"""CITATION.cff: the Citation File Format's required keys, the project's version, and the
papers whose measurements the workflow reproduces as references."""

from __future__ import annotations

import yaml

import pipeline
from pipeline.tables import ROOT


def test_the_citation_file_names_the_project_and_its_papers():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors", "type", "license"):
        assert cff[key], key
    assert str(cff["version"]) == pipeline.__version__
    assert cff["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")
    titles = " ".join(r["title"] for r in cff["references"])
    for words in ("Gradient Dissent", "Zero-Sum Learning", "Gradient Bottleneck"):
        assert words in titles, words
    for ref in cff["references"]:
        assert ref["type"] and ref["year"] and all(a["family-names"] for a in ref["authors"])
