"""The update stage in the shared tiny run: its stores against the extraction stores of the same
checkpoints (the landscape passes through ℓ(θ) at α = 0 and through ℓ(θ + Δθ) at the actual
step), and the summary's reductions against the per-token values they come from."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from pipeline.schema import update_summary
from pipeline.summary import open_summary
from tests.reference import interference_of_changes

pytestmark = pytest.mark.workflow


def stores(run_dir, config):
    for model in config["models"]:
        for step in config["steps"]:
            yield model, step, xr.open_zarr(run_dir / f"results/update/{model}/step{step}.zarr")


def test_update_stores_agree_with_the_extraction(run_dir, config):
    K = config["update"]["batches"]
    for model, step, u in stores(run_dir, config):
        u = u.load()
        ex = xr.open_zarr(run_dir / f"results/extract/{model}/step{step}.zarr").load()
        assert u.attrs["direction"] == "optimizer" and u.attrs["multi_step"] == 0
        assert u.attrs["optimizer_step"] == step
        assert u.attrs["weights_sha256"] == ex.attrs["weights_sha256"]
        assert u.sizes["update_batch"] == K
        np.testing.assert_allclose(u["loss"].values, ex["loss"].values, rtol=1e-5)
        alpha = u["alpha"].values
        at0, at1 = int(np.flatnonzero(alpha == 0)[0]), int(np.flatnonzero(alpha == 1)[0])
        idx = u["sample_token"].values
        land = u["landscape"].values[0]  # (batch, alpha, sample)
        before = np.broadcast_to(ex["loss"].values[0][idx], land[:, at0].shape)
        np.testing.assert_allclose(land[:, at0], before, rtol=1e-5)
        after = u["loss"].values[0][idx] + u["loss_change"].values[0][:, idx]
        np.testing.assert_allclose(land[:, at1], after, rtol=1e-5, atol=1e-6)
        # the distance coordinate is the multiple times the step length
        np.testing.assert_allclose(
            u["alpha_distance"].values, np.outer(u["update_norm"].values[0], alpha)
        )
        # the per-parameter norms add up to the whole update's
        np.testing.assert_allclose(
            np.sqrt((u["update_param_norm"].values[0] ** 2).sum(-1)), u["update_norm"].values[0]
        )
        cos = u["update_grad_cos"].values
        assert np.isfinite(cos).all() and (np.abs(cos) <= 1 + 1e-6).all()


def test_summary_reduces_the_update_stores(run_dir, config):
    s = open_summary(str(run_dir / "results/summary.zarr")).load()
    assert s.attrs["update_direction"] == {m: "optimizer" for m in config["models"]}
    for model, step, u in stores(run_dir, config):
        u = u.load().isel(step=0)
        for name, prefix in (("eval", ""), ("train", "train_")):
            change = u[f"{prefix}loss_change"].values
            for k in range(change.shape[0]):
                D, M = interference_of_changes(change[k].astype(np.float64))
                got = s[update_summary(name, "D")].sel(model=model, step=step, update_batch=k)
                assert float(got) == pytest.approx(D, rel=1e-9)
                got = s[update_summary(name, "M")].sel(model=model, step=step, update_batch=k)
                assert float(got) == pytest.approx(M, rel=1e-9)
        # per bin, on V
        bins = u["bin"].values
        for b in np.unique(bins):
            D, _ = interference_of_changes(u["loss_change"].values[0][bins == b])
            got = float(
                s[update_summary("eval", "D_bin")].sel(
                    model=model, step=step, update_batch=0, bin=b
                )
            )
            assert got == pytest.approx(D, rel=1e-9, nan_ok=True)
        # the first-order prediction is a close one at this scale
        assert (s[update_summary("eval", "pearson")].sel(model=model, step=step) > 0.9).all()
