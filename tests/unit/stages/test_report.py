"""The run's page (pipeline/report.py): the data it embeds decode to the summary's values, its
captions render, and a Pythia-preset-shaped run stays small enough to mail. The page in a real
browser is tested in tests/workflow/test_report.py."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import xarray as xr

from pipeline import report
from pipeline.schema import SUMMARY
from pipeline.toy.schedule import pythia_schedule
from tests.unit.plots.test_plots import make, synthetic_summary


def decoded(ds: xr.Dataset) -> dict:
    """The page's data block, parsed, each variable's flat values back in its dims' shape."""
    doc = json.loads(report.data(ds))
    coords = doc["coords"]
    out = {}
    for name, v in doc["variables"].items():
        shape = [len(coords[d]) for d in v["dims"]]
        values = np.array([np.nan if x is None else x for x in v["values"]], dtype=float)
        out[name] = values.reshape(shape)
    return {"coords": coords, "values": out, "doc": doc}


def test_the_embedded_values_are_the_summarys():
    ds = synthetic_summary(n_models=3)
    got = decoded(ds)
    assert got["coords"]["model"] == [str(m) for m in ds.model.values]
    views = report.measurements(ds)
    assert set(got["values"]) == {n for names in views.values() for n in names}
    assert "loss" in views["bins"] and "loss_overall" in views["overall"]
    for name, values in got["values"].items():
        want = ds[name].values.astype(float)
        assert np.array_equal(np.isnan(values), np.isnan(want)), name
        np.testing.assert_allclose(values, want, rtol=10.0 ** (1 - report.DIGITS), err_msg=name)
    # each variable carries its declaration (meaning, units) for the page's definition panel
    loss, declared = got["doc"]["variables"]["loss"], next(v for v in SUMMARY if v.name == "loss")
    assert (loss["meaning"], loss["units"]) == (declared.meaning, declared.units)


def test_short_values_beside_nans_stay_valid_json():
    assert json.loads(report._flat(np.array([0.0, 1.0, np.nan]))) == [0, 1, None]


def test_a_view_lists_only_variables_of_its_dimensions_with_values():
    ds = synthetic_summary(n_models=2)
    ds["loss"] = ds["loss"] * np.nan  # nothing to draw: not offered
    views = report.measurements(ds)
    assert "loss" not in views["bins"]
    for view, (_, dims) in report.VIEWS.items():
        assert all(ds[n].dims == dims for n in views[view])


def test_captions_render_as_html():
    html = report.caption_html("Loss per bin (*nats*); see ``loss``.\n\nSecond paragraph.")
    assert "<em>nats</em>" in html and html.count("<p>") == 2


def test_the_page_holds_every_part_and_nothing_to_fetch():
    ds = synthetic_summary(n_models=2)
    ds.attrs.update(run="mine", results="results/mine", config_files=["config/mine.yaml"])
    png = io.BytesIO()
    make("loss_by_bin", ds).savefig(png, format="png", dpi=50)
    figures = [report.Figure("loss_by_bin", "Saturation", "The *loss* per bin.", png.getvalue())]
    text = report.page(ds, figures)
    assert "mine run" in text and "config/mine.yaml" in text
    assert text.count('class="figure"') == 1 and "<em>loss</em>" in text
    for marker in re.findall(r"/\*[A-Z]+\*/", report.TEMPLATE.read_text()):
        assert marker not in text  # every placeholder filled
    # no script, stylesheet or image is loaded from elsewhere (the page opens from disk)
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"https?:", text)


def test_embedded_figures_are_smaller_and_look_the_same():
    """The palette PNG of a real figure: smaller, and its pixels those of the original to within
    a level (of 255) on average, 999 pixels in 1000 within an eighth of the range (the rest:
    anti-aliased edges)."""
    from PIL import Image

    buffer = io.BytesIO()
    make("dissent", synthetic_summary(n_models=3)).savefig(buffer, format="png", dpi=100)
    png = buffer.getvalue()
    small = report.compact_png(png)
    assert len(small) < 0.6 * len(png)
    a, b = (np.asarray(Image.open(io.BytesIO(x)).convert("RGB"), dtype=float) for x in (png, small))
    assert a.shape == b.shape
    error = np.abs(a - b).max(axis=-1)
    assert error.mean() < 1.0 and np.quantile(error, 0.999) <= 32


def pythia_shaped(n_models: int = 8, n_bins: int = 24, batches: int = 2) -> xr.Dataset:
    """Every summary variable the page embeds, at the Pythia preset's shape (8 models, its 154
    steps, two dozen frequency bins), with random values."""
    steps = [0, *[2**k for k in range(10)], *range(1000, 143001, 1000)]
    assert len(steps) == 154 and steps == sorted(set(steps))
    sizes = {"model": n_models, "step": len(steps), "bin": n_bins, "update_batch": batches}
    rng = np.random.default_rng(0)
    dims_of_views = {dims for _, dims in report.VIEWS.values()}
    ds = xr.Dataset(
        {
            v.name: (v.dims, rng.lognormal(size=[sizes[d] for d in v.dims]).astype(np.float32))
            for v in SUMMARY
            if v.dims in dims_of_views
        },
        coords={
            "model": [f"pythia-{i}" for i in range(n_models)],
            "step": steps,
            "bin": np.arange(-n_bins, 0),
            "update_batch": np.arange(batches),
        },
    )
    return ds


def test_a_pythia_shaped_run_fits_in_a_mail():
    ds = pythia_shaped()
    data = len(report.data(ds).encode())
    vega = len(report._vega().encode())
    # the figures: 17 palette PNGs (report.compact_png), each the size of the default run's
    # largest (decomposition_basis, 240 kB for its 4 models: the Pythia preset has 8, but most
    # figures do not grow with the models), base64
    figures = 17 * 240_000 * 4 / 3
    total = data + vega + figures
    print(
        f"Pythia shape: data {data / 1e6:.1f} MB, vega {vega / 1e6:.1f} MB, "
        f"figures ≤ {figures / 1e6:.1f} MB, page ≤ {total / 1e6:.1f} MB"
    )
    assert total < 15e6  # under the common 20-25 MB attachment limits, with room
    assert pythia_schedule(143000, 1000)[-1] == 143000  # the preset's steps are Pythia's


@pytest.mark.parametrize("view", list(report.VIEWS))
def test_every_view_has_a_measurement_in_a_full_summary(view):
    assert report.measurements(synthetic_summary(n_models=2))[view] or view == "single_step"
