"""Hugging Face Trainer checkpoints (``pipeline.formats.trainer``) against the Trainer itself.

The reference is a real ``transformers.Trainer`` run on the CPU: a tiny GPT-NeoX trained for a
dozen steps with checkpoints every 4, then resumed from ``checkpoint-8`` for exactly one step on
a fixed batch. The update stage's step from the same checkpoint (``optimizer.pt`` mapped by the
Trainer's grouping, the saved learning rate, the Trainer's clipping and loss normalisation) must
give the same weights, with and without clipping and with gradient accumulation; deliberately
wrong grouping, learning rate or clipping must not.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from pipeline import formats
from pipeline.checkpoints import link_checkpoint, load_checkpoint
from pipeline.formats import trainer as fmt
from pipeline.optimizer import one_step
from pipeline.update import batch_backward
from tests.trainer_run import BATCH, VOCAB, WINDOW, tiny_model, train

pytestmark = pytest.mark.slow  # a real Trainer run: not in the fast tier

#: The agreement asked of one step: per tensor, relative to the tensor's largest entry.
TOLERANCE = 1e-5


def run(root: Path, **kw) -> dict:
    """Train 12 steps, then resume from checkpoint-8 for one step on a fixed batch."""
    g = torch.Generator().manual_seed(1)
    accum = kw.get("gradient_accumulation_steps", 1)
    train(root / "run", tiny_model(), torch.randint(0, VOCAB, (64, WINDOW), generator=g), 12, **kw)
    batch = torch.randint(0, VOCAB, (BATCH * accum, WINDOW), generator=g)
    ckpt = root / "run" / "checkpoint-8"
    resumed = root / "resumed"
    shutil.copytree(ckpt, resumed / "checkpoint-8")
    # the model comes from the checkpoint, as a user resumes: the Trainer's own state-dict load
    # misses GPT-NeoX's output layer under transformers 5 (saved as embed_out, kept as lm_head)
    model = load_checkpoint(resumed / "checkpoint-8").train()
    train(resumed, model, batch, 9, resume=str(resumed / "checkpoint-8"), **kw)
    return {"checkpoint": ckpt, "batch": batch, "after": resumed / "checkpoint-9"}


def stage_step(ckpt: Path, batch: torch.Tensor, **change) -> dict[str, torch.Tensor]:
    """The update stage's step from ``ckpt`` on ``batch`` (``change``: fields of the state
    replaced, to show that a wrong one is caught), as the new weights."""
    model = load_checkpoint(ckpt, format="trainer")
    state = fmt.read_optimizer(ckpt, model, allow_pickle=True, step=8)
    for key, value in change.items():
        setattr(state, key, value(state) if callable(value) else value)
    model.train()
    delta = one_step(model, state, lambda: batch_backward(model, batch, 2, state.loss_denominator))
    return {n: p.detach() + delta[n] for n, p in model.named_parameters()}


def errors(ours: dict, ckpt: Path) -> dict[str, float]:
    """Per tensor: max |ours − Trainer's| / max |Trainer's|."""
    theirs = {n: p.detach() for n, p in load_checkpoint(ckpt, format="trainer").named_parameters()}
    return {
        n: float((ours[n] - theirs[n]).abs().max() / theirs[n].abs().max().clamp_min(1e-30))
        for n in ours
    }


SETTINGS = {
    "no clipping": {"max_grad_norm": 0.0},
    "clipping": {"max_grad_norm": 0.05},  # below the gradient's norm: the clip is active
    "accumulation": {"max_grad_norm": 0.05, "gradient_accumulation_steps": 2},
}


@pytest.fixture(scope="module", params=list(SETTINGS))
def resumed(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param.replace(" ", "_"))
    return {"name": request.param, **run(root, **SETTINGS[request.param])}


def test_one_step_from_optimizer_pt_is_the_trainers(resumed):
    err = errors(stage_step(resumed["checkpoint"], resumed["batch"]), resumed["after"])
    print(resumed["name"], f"largest error {max(err.values()):.2e}")
    assert max(err.values()) <= TOLERANCE, err


WRONG = {
    "grouping": {"no_weight_decay": []},  # every tensor decayed
    "learning rate": {"lr": lambda s: 2 * s.lr},
    "clipping": {"max_grad_norm": None},
}


@pytest.mark.parametrize("what", list(WRONG))
def test_a_wrong_setting_is_caught(resumed, what):
    if what == "clipping" and resumed["name"] == "no clipping":
        pytest.skip("nothing is clipped in this run")
    err = errors(
        stage_step(resumed["checkpoint"], resumed["batch"], **WRONG[what]), resumed["after"]
    )
    print(resumed["name"], what, f"largest error {max(err.values()):.2e}")
    # a wrong grouping moves the no-decay tensors by lr·wd·|w| (4e-5 here), the others far more
    assert max(err.values()) > 4 * TOLERANCE


def test_state_settings_come_from_the_files(resumed):
    model = load_checkpoint(resumed["checkpoint"], format="trainer")
    state = fmt.read_optimizer(resumed["checkpoint"], model, allow_pickle=True, step=8)
    decay, no_decay = fmt.parameter_groups(model)
    assert state.step == 8 and set(state.no_weight_decay) == set(no_decay)
    assert all("bias" in n or "norm" in n for n in no_decay) and decay
    assert state.max_grad_norm == (SETTINGS[resumed["name"]]["max_grad_norm"] or None)
    assert state.provenance["max_grad_norm"] == fmt.ARGS_FILE
    log = json.loads((resumed["checkpoint"] / fmt.STATE_FILE).read_text())["log_history"]
    steps, loss = fmt.read_train_log(resumed["checkpoint"])
    assert list(steps) == [e["step"] for e in log if "loss" in e] == list(range(1, 9))


# --- bad input --------------------------------------------------------------------------------


@pytest.fixture
def checkpoint(resumed, tmp_path):
    dst = tmp_path / "checkpoint-8"
    shutil.copytree(resumed["checkpoint"], dst)
    return dst


def test_detected_and_linked_without_copies(checkpoint, tmp_path):
    assert formats.detect(checkpoint).NAME == "trainer"
    link_checkpoint(checkpoint, tmp_path / "step8", allow_pickle=True)
    linked = tmp_path / "step8"
    assert (linked / "model.safetensors").is_symlink() and not (linked / "config.json").is_symlink()
    assert not any(f.name.startswith("rng_state") for f in linked.iterdir())
    shutil.rmtree(checkpoint)  # the config stays: nothing downstream re-runs
    assert (linked / "config.json").exists()


def test_pickles_need_the_opt_in(checkpoint):
    model = load_checkpoint(checkpoint)
    with pytest.raises(ValueError, match="allow_pickle"):
        fmt.read_optimizer(checkpoint, model)


def test_files_from_another_checkpoint_are_refused(checkpoint, resumed):
    model = load_checkpoint(checkpoint)
    shutil.copy(resumed["checkpoint"].parent / "checkpoint-4" / fmt.OPTIMIZER_FILE, checkpoint)
    with pytest.raises(ValueError, match="do not belong together"):
        fmt.read_optimizer(checkpoint, model, allow_pickle=True, step=8)
    with pytest.raises(ValueError, match="global_step 8, but the checkpoint is step 12"):
        fmt.read_optimizer(checkpoint, model, allow_pickle=True, step=12)


def test_a_learning_rate_off_the_schedule_is_refused(checkpoint):
    model = load_checkpoint(checkpoint)
    raw = torch.load(checkpoint / fmt.OPTIMIZER_FILE, weights_only=True)
    for g in raw["param_groups"]:
        g["lr"] *= 10
    torch.save(raw, checkpoint / fmt.OPTIMIZER_FILE)
    (checkpoint / fmt.SCHEDULER_FILE).unlink()  # only the schedule can tell now
    with pytest.raises(ValueError, match="is not what the schedule"):
        fmt.read_optimizer(checkpoint, model, allow_pickle=True)


def test_another_models_state_is_refused(checkpoint):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    other = GPTNeoXForCausalLM(
        GPTNeoXConfig(**{**tiny_model().config.to_dict(), "hidden_size": 12})
    )
    with pytest.raises(ValueError, match="another model"):
        fmt.read_optimizer(checkpoint, other, allow_pickle=True)


def test_a_peft_adapter_is_refused_with_the_reason(checkpoint):
    (checkpoint / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="adapter.*merge"):
        formats.detect(checkpoint)


def test_a_missing_shard_is_incomplete(checkpoint):
    (checkpoint / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"x": "model-00002-of-00002.safetensors"}})
    )
    assert "missing" in fmt.problem(checkpoint, allow_pickle=True)


def test_a_sharded_checkpoint_works(checkpoint, tmp_path):
    """Weights in shards with a safetensors index (large models) link and load as one."""
    model = load_checkpoint(checkpoint)
    (checkpoint / "model.safetensors").unlink()
    model.save_pretrained(checkpoint, max_shard_size="20KB")
    assert len(list(checkpoint.glob("model-*.safetensors"))) > 1
    assert fmt.problem(checkpoint, allow_pickle=True) is None
    link_checkpoint(checkpoint, tmp_path / "step8", allow_pickle=True)
    again = load_checkpoint(tmp_path / "step8")
    for (n, p), (_, q) in zip(model.named_parameters(), again.named_parameters()):
        assert torch.equal(p, q), n
    state = fmt.read_optimizer(tmp_path / "step8", again, allow_pickle=True, step=8)
    assert state.step == 8
