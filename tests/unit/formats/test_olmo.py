"""OLMo-native checkpoints against OLMo's own implementation (``tests/olmo_reference.py``, run
with ``ai2-olmo`` from ``.olmo-reference/``): the transformers model computes OLMo's logits, and
one step from the mapped ``optim.pt`` is OLMo's own next step."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.checkpoints import link_checkpoint, load_checkpoint, weights_sha256
from pipeline.formats import olmo
from pipeline.optimizer import one_step
from pipeline.update import batch_backward
from tests.snake import REPO

pytestmark = pytest.mark.slow  # OLMo's own code in a subprocess: not in the fast tier

REFERENCE = REPO / ".olmo-reference"


def run_reference(out: Path, *args: str) -> dict:
    """Run OLMo's reference training in its own environment; returns its reference.pt."""
    assert (REFERENCE / ".installed").exists(), "OLMo's reference is missing: run `make test`"
    env = {**os.environ, "PYTHONPATH": str(REFERENCE), "PYTHONWARNINGS": "ignore"}
    script = REPO / "tests" / "olmo_reference.py"
    r = subprocess.run(
        [sys.executable, str(script), str(out), *args], env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return torch.load(out / "reference.pt", weights_only=True)


def reference_python(code: str) -> str:
    """Run ``code`` with OLMo's package importable; returns its stdout."""
    env = {**os.environ, "PYTHONPATH": str(REFERENCE), "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.fixture(
    scope="module", params=[(1, 1.0), (0, 0.0)], ids=["tied-clipped", "untied-unclipped"]
)
def suite(request, tmp_path_factory):
    """OLMo-trained checkpoints at steps 1, 2 and 4, linked as the download rule links them:
    tied embeddings with gradient clipping (active at every step: the gradients' norm exceeds
    1), and untied ones without."""
    tying, clip = request.param
    out = tmp_path_factory.mktemp(f"olmo{tying}")
    args = ("--save", "1,2,4", "--tying", str(tying), "--max-grad-norm", str(clip))
    ref = run_reference(out / "native", *args)
    for step in (1, 2, 4):
        link_checkpoint(
            out / "native" / f"step{step}", out / f"step{step}", format="olmo", allow_pickle=True
        )
    return out, ref


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_logits_equal_olmos_own(suite):
    out, ref = suite
    for step, want in ref["logits"].items():
        model = load_checkpoint(out / f"step{step}")
        assert type(model).__name__ == "LlamaForCausalLM"
        with torch.no_grad():
            got = model(input_ids=ref["probe"]).logits
        assert got.shape == want.shape  # every padded row of the output layer is kept
        assert rel(got, want) <= 1e-5, step
    # the checkpoints differ, so equal logits are not an accident of one state
    assert rel(ref["logits"][1], ref["logits"][4]) > 1e-2


def test_no_norm_parameters_and_the_saved_fingerprint(suite):
    out, _ = suite
    model = load_checkpoint(out / "step4")
    names = [n for n, _ in model.named_parameters()]
    assert not [n for n in names if "norm" in n]  # OLMo's RMSNorm has no weights
    assert model.get_input_embeddings().padding_idx is None
    native = torch.load(out / "native/step4/model.pt", weights_only=True)
    assert sum(p.numel() for p in model.parameters()) == sum(t.numel() for t in native.values())
    assert len(weights_sha256(out / "step4")) == 64
    assert weights_sha256(out / "step4") != weights_sha256(out / "step2")


def test_one_step_from_optim_pt_is_olmos_next_step(suite):
    out, ref = suite
    ckpt = out / "step4"
    assert olmo.has_optimizer(ckpt)
    state = olmo.read_optimizer(ckpt)
    assert state.step == 4 and state.loss_denominator == "inputs"
    assert state.no_weight_decay == ["model.embed_tokens.weight"]
    config = yaml.safe_load((ckpt / "config.yaml").read_text())
    assert state.lr == pytest.approx(olmo.scheduled_lr(config, 5), rel=1e-12)
    model = load_checkpoint(ckpt)
    model.train()
    ids = ref["next_batch"]

    def update(state, denominator: str) -> dict:
        return one_step(model, state, lambda: batch_backward(model, ids, 3, denominator))

    ours = update(state, state.loss_denominator)
    worst = 0.0
    for name, want in ref["next_update"].items():
        for hf_name, part in olmo.split_tensor(name, want, model.config).items():
            worst = max(worst, rel(ours[hf_name], part))
    assert worst <= 1e-4
    # the test can fail: without the clipping OLMo applied, or (unclipped, where the gradient's
    # scale matters) with the loss divided by the predicted tokens instead of the input ids
    if state.max_grad_norm is not None:
        wrong = update(replace(state, max_grad_norm=None), state.loss_denominator)
    else:
        wrong = update(state, "labels")
    assert max(rel(wrong[n], ours[n]) for n in ours) > 1e-3


@pytest.mark.parametrize(
    "scheduler",
    [
        {"name": "cosine_with_warmup", "t_warmup": 10, "alpha_f": 0.1},
        {"name": "linear_with_warmup", "t_warmup": 10, "alpha_f": 0.0, "t_max": 50},
        {"name": "inverse_sqrt_with_warmup", "t_warmup": 10},
        {"name": "constant"},
        {"name": "cosine_with_warmup", "t_warmup": 5, "warmup_min_lr": 0.0},
    ],
    ids=["cosine", "linear", "inv-sqrt", "constant", "warmup-from-0"],
)
def test_schedule_is_olmos(scheduler):
    steps = [0, 1, 5, 9, 10, 11, 30, 59, 60, 61, 100]
    code = f"""
import json
from olmo.config import TrainConfig, SchedulerConfig
from olmo.optim import build_scheduler
cfg = TrainConfig(scheduler=SchedulerConfig(**{scheduler!r}), max_duration=60)
s = build_scheduler(cfg)
print(json.dumps([s.get_lr(2e-3, t, 60) for t in {steps!r}]))
"""
    want = json.loads(reference_python(code))
    config = {"optimizer": {"learning_rate": 2e-3}, "scheduler": scheduler, "max_duration": 60}
    got = [olmo.scheduled_lr(config, t) for t in steps]
    assert got == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_trapezoidal_schedule_of_the_zsl_fork():
    """The Zero-sum learning fork's schedule (not in ai2-olmo): warm-up from 10% of the peak,
    constant, then a linear cool-down to alpha_f × peak at the end (here a known curve)."""
    config = {
        "optimizer": {"learning_rate": 1e-3},
        "scheduler": {"name": "trapezoidal", "t_warmup": 100, "t_cooldown": 800, "alpha_f": 0.0},
        "max_duration": 1000,
    }
    lr = [olmo.scheduled_lr(config, t) for t in (0, 50, 100, 500, 800, 900, 1000, 1001)]
    assert lr == pytest.approx([1e-4, 5.5e-4, 1e-3, 1e-3, 1e-3, 5e-4, 0.0, 0.0], abs=1e-15)


def test_a_learning_rate_of_zero_at_the_end_is_reset_and_logged(suite, tmp_path, caplog):
    out, _ = suite
    ckpt = tmp_path / "step4"
    ckpt.mkdir()
    for f in ("model.pt", "config.json"):
        (ckpt / f).symlink_to((out / "step4" / f).resolve())
    config = yaml.safe_load((out / "step4" / "config.yaml").read_text())
    config["scheduler"] = {"name": "trapezoidal", "t_warmup": 1, "t_cooldown": 2, "alpha_f": 0.0}
    config["max_duration"] = 4  # the saved step is the schedule's last: its rate is 0
    (ckpt / "config.yaml").write_text(yaml.safe_dump(config))
    optim = torch.load(out / "step4" / "optim.pt", weights_only=True)
    for group in optim["param_groups"]:
        group["lr"] = 0.0
    torch.save(optim, ckpt / "optim.pt")
    with caplog.at_level(logging.WARNING, logger="pipeline.formats.olmo"):
        state = olmo.read_optimizer(ckpt)
    assert state.lr == pytest.approx(3e-3)  # the peak rate of the reference's config
    assert "learning rate of 0" in caplog.text and "resetting" in caplog.text


def test_files_that_do_not_belong_together_are_refused(suite, tmp_path):
    out, _ = suite
    ckpt = tmp_path / "step4"
    ckpt.mkdir()
    for f in ("model.pt", "config.json", "optim.pt"):
        (ckpt / f).symlink_to((out / "step4" / f).resolve())
    config = yaml.safe_load((out / "step4" / "config.yaml").read_text())
    config["optimizer"]["learning_rate"] = 1.0  # another run's schedule
    (ckpt / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="saved learning rate .* is not what the schedule"):
        olmo.read_optimizer(ckpt)
    other = tmp_path / "other"
    other.mkdir()
    for f in ("config.yaml", "config.json"):
        (other / f).symlink_to((out / "step4" / f).resolve())
    native = torch.load(out / "step4" / "model.pt", weights_only=True)
    native["transformer.blocks.0.extra.weight"] = torch.zeros(2)
    torch.save(native, other / "model.pt")
    with pytest.raises(ValueError, match="extra.weight"):
        load_checkpoint(other)


@pytest.mark.parametrize(
    "key,value",
    [("layer_norm_type", "default"), ("include_bias", True), ("clip_qkv", 8.0)],
)
def test_architectures_it_does_not_reproduce_are_refused(key, value):
    config = {"model": {"d_model": 32, "n_heads": 4, "n_layers": 2, "vocab_size": 100, key: value}}
    with pytest.raises(ValueError, match=f"model.{key}"):
        olmo.hf_config(config, "x/config.yaml")


def test_native_format_needs_the_pickle_opt_in():
    from pipeline.checkpoints import fetch_revision

    with pytest.raises(ValueError, match="allow_pickle: true"):
        fetch_revision("mirandrom/zsl-checkpoints", "OLMo-14M-step1", format="olmo")


@pytest.mark.parametrize(
    "shape",
    [
        ("--d-model", "48", "--heads", "3", "--layers", "1", "--mlp-ratio", "2"),
        ("--d-model", "64", "--heads", "8", "--layers", "3", "--rope-theta", "500000"),
        ("--d-model", "16", "--heads", "1", "--layers", "2", "--tying", "0", "--vocab", "40"),
    ],
    ids=["3-heads-mlp2", "8-heads-theta", "1-head-untied"],
)
def test_logits_equal_olmos_own_on_other_shapes(shape, tmp_path):
    ref = run_reference(tmp_path / "native", "--save", "1", *shape)
    link_checkpoint(tmp_path / "native/step1", tmp_path / "step1", format="olmo", allow_pickle=True)
    model = load_checkpoint(tmp_path / "step1")
    with torch.no_grad():
        got = model(input_ids=ref["probe"]).logits
    assert rel(got, ref["logits"][1]) <= 1e-5
