"""The plan (``pipeline.plan``) driven with plain dicts: steps found on disk and in an offline
hub cache, incomplete checkpoints skipped, per-model steps, update directions and the errors
that name the model and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import ConfigError
from pipeline.plan import Plan


def checkpoint(path: Path, step: int, optimizer: bool = True, weights: bool = True) -> Path:
    """The files a Trainer checkpoint is recognised and judged complete by (contents are not
    read when planning)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    if weights:
        (path / "model.safetensors").write_bytes(b"")
    if optimizer:
        (path / "optimizer.pt").write_bytes(b"")
    return path


def config(tmp: Path, **model) -> dict:
    spec = {"source": "local", "path": str(tmp / "run/checkpoint-{step}"), "allow_pickle": True}
    return {"models": {"m": {**spec, **model}}, "steps": "all", "update": {}}


def test_steps_all_finds_complete_checkpoints_only(tmp_path):
    for step in (4, 8):
        checkpoint(tmp_path / f"run/checkpoint-{step}", step)
    checkpoint(tmp_path / "run/tmp-checkpoint-12", 12)  # being saved: not the template's
    checkpoint(tmp_path / "run/checkpoint-16", 16, weights=False)  # still being written
    plan = Plan(config(tmp_path), root=tmp_path)
    assert plan.steps("m") == [4, 8]
    assert plan.format("m") == "trainer" and plan.direction("m") == "optimizer"
    assert any("checkpoint-16" in n and "no .safetensors" in n for n in plan.notes)


def test_a_linked_checkpoint_stays_after_its_source_is_deleted(tmp_path):
    checkpoint(tmp_path / "run/checkpoint-8", 8)
    (tmp_path / "results/checkpoints/m/step4").mkdir(parents=True)
    (tmp_path / "results/checkpoints/m/step4/config.json").write_text("{}")
    assert Plan(config(tmp_path), root=tmp_path).steps("m") == [4, 8]


def test_a_model_carries_its_own_steps(tmp_path):
    for step in (4, 8):
        checkpoint(tmp_path / f"run/checkpoint-{step}", step)
    cfg = config(tmp_path, steps=[8])
    cfg["steps"] = [0, 1]
    assert Plan(cfg, root=tmp_path).steps("m") == [8]


def test_a_template_that_matches_nothing_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"models.m: steps: all found no complete checkpoint"):
        Plan(config(tmp_path), root=tmp_path).steps("m")


def test_two_templates_that_resolve_to_one_directory_are_an_error(tmp_path):
    checkpoint(tmp_path / "run/checkpoint-4", 4)
    cfg = config(tmp_path)
    cfg["models"]["twin"] = {
        **cfg["models"]["m"],
        "path": str(tmp_path / "run/../run/checkpoint-{step}"),
    }
    with pytest.raises(ConfigError, match="resolve to the same directory"):
        Plan(cfg, root=tmp_path).steps("m")


def test_without_optimizer_pt_the_update_follows_displacements(tmp_path):
    checkpoint(tmp_path / "run/checkpoint-4", 4, optimizer=False)
    checkpoint(tmp_path / "run/checkpoint-8", 8)
    plan = Plan(config(tmp_path), root=tmp_path)
    assert plan.direction("m") == "displacement"
    assert plan.update_steps("m") == [4] and plan.next_step("m", 4) == 8
    assert any("[4] have no optimizer state" in n for n in plan.notes)
    cfg = config(tmp_path)
    cfg["update"] = {"direction": "optimizer"}
    with pytest.raises(ConfigError, match="update.direction is optimizer, but checkpoints"):
        Plan(cfg, root=tmp_path).direction("m")


def test_without_the_pickle_opt_in_the_update_follows_displacements(tmp_path):
    checkpoint(tmp_path / "run/checkpoint-4", 4)
    plan = Plan(config(tmp_path, allow_pickle=False), root=tmp_path)
    assert plan.direction("m") == "displacement"
    assert any("allow_pickle" in n for n in plan.notes)


def test_a_displacement_from_the_last_step_is_refused(tmp_path):
    for step in (4, 8):
        checkpoint(tmp_path / f"run/checkpoint-{step}", step)
    cfg = config(tmp_path)
    cfg["update"] = {"direction": "displacement", "steps": [8]}
    plan = Plan(cfg, root=tmp_path)
    assert plan.update_steps("m") == []
    with pytest.raises(
        ConfigError, match=r"update.steps: \[8\] get no update job: \[8\] is the last"
    ):
        plan.check_update_steps()


def test_an_update_step_no_model_measures_is_refused(tmp_path):
    for step in (4, 8):
        checkpoint(tmp_path / f"run/checkpoint-{step}", step)
    cfg = config(tmp_path)
    cfg["update"] = {"steps": [4, 6]}
    with pytest.raises(ConfigError, match=r"\[6\] get no update job: no model measures them"):
        Plan(cfg, root=tmp_path).check_update_steps()
    cfg["update"] = {"steps": [4]}
    Plan(cfg, root=tmp_path).check_update_steps()  # planned: nothing to say


def test_a_displacement_suite_without_listed_steps_says_what_it_skips(tmp_path):
    checkpoint(tmp_path / "run/checkpoint-8", 8)
    cfg = config(tmp_path)
    cfg["update"] = {"direction": "displacement"}
    plan = Plan(cfg, root=tmp_path)
    plan.check_update_steps()
    assert any("no later checkpoint" in n for n in plan.notes)


def test_the_training_curve_is_the_last_checkpoints_trainer_state(tmp_path):
    for step in (4, 8):
        checkpoint(tmp_path / f"run/checkpoint-{step}", step)
    assert Plan(config(tmp_path), root=tmp_path).train_curve("m") == (
        "results/checkpoints/m/step8/config.json",
        "trainer",
    )


def test_hub_subfolders_are_found_in_the_offline_cache(hub_cache):
    from tests.hubcache import add_revision

    files = {f"checkpoint-{s}/config.json": b"{}" for s in (10, 20)}
    add_revision(Path(hub_cache), "me/run", "main", {**files, "README.md": b""})
    cfg = {
        "models": {"r": {"source": "hub", "repo_id": "me/run", "subfolder": "checkpoint-{step}"}},
        "steps": "all",
        "update": {},
    }
    plan = Plan(cfg)
    assert plan.steps("r") == [10, 20] and plan.format("r") == "trainer"
    assert (plan.revision("r", 10), plan.subfolder("r", 10)) == ("main", "checkpoint-10")


def toy_run(**sections) -> dict:
    """A toy run with one named language beside the run's own, its data from text files."""
    return {
        "models": {
            "a": {"source": "toy", "hidden_size": 8, "steps": [0, 4]},
            "b": {"source": "toy", "hidden_size": 8, "language": "spam"},
        },
        "steps": [0, 4],
        "toy": {"language": {"vocab_size": 64}, "languages": {"spam": {"vocab_size": 96}}},
        "eval": {
            "name": "mine",
            "source": "text",
            "paths": ["held-out.txt"],
            "sequences": 4,
            "context_length": 16,
        },
        "frequency": {"name": "counts", "source": "megatron", "paths": ["data/shard"]},
        "update": {},
        **sections,
    }


def test_a_named_language_is_a_dataset_like_the_runs_own():
    plan = Plan(toy_run())
    assert plan.eval_inputs("mine") == {
        "frequency": "results/data/counts/frequency.zarr",
        "texts": ["held-out.txt"],
    }
    assert plan.frequency_inputs("counts") == {"shards": ["data/shard.bin", "data/shard.idx"]}
    # the language's eval set is binned by its own counts and cut from its own corpus
    assert plan.eval_inputs("spam") == {
        "frequency": "results/data/spam/frequency.zarr",
        "corpus": "results/data/spam/corpus.zarr",
    }
    assert plan.frequency_params("spam") == {"name": "spam", "source": "toy", "vocab_size": 96}
    assert plan.eval_store("b") == "results/data/spam/eval.zarr"
    assert plan.eval_store("a") == "results/data/mine/eval.zarr"
    assert plan.corpora == ["toy", "spam"]  # the toy models train on the run's own language


def test_a_named_run_keeps_every_path_in_its_own_folder():
    default, named = Plan(toy_run()), Plan({**toy_run(), "run": "mine"})
    assert default.results == "results" and named.results == "results/mine"
    for kind in ("checkpoint", "extract", "update", "data"):
        assert named.template(kind) == default.template(kind).replace("results/", "results/mine/")
    assert named.eval_inputs("spam")["corpus"] == "results/mine/data/spam/corpus.zarr"
    assert named.train_curve("b")[0] == "results/mine/checkpoints/b/train_loss.tsv"
    assert named.provenance()["run"] == "mine" and default.provenance()["run"] == ""


def test_toy_batches_are_drawn_from_the_language_not_its_corpus():
    plan = Plan(toy_run(update={"data": {"name": "mine", "source": "toy"}}))
    assert plan.update_batches_inputs("mine") == {"frequency": "results/data/counts/frequency.zarr"}
    assert plan.update_batches_language("spam")["vocab_size"] == 96
    assert plan.update_batches_language("mine")["vocab_size"] == 64


def test_the_extract_stage_measures_the_steps_extract_steps_lists():
    """…and the seeds stage follows it; the extraction jobs are told nothing of the list (a new
    step re-runs no other step's job)."""
    run = toy_run(extract={"steps": [4]})
    run["models"]["b"] = {"source": "toy", "hidden_size": 8, "group": "a"}  # a's second seed
    plan = Plan(run)
    assert plan.steps("a") == [0, 4] and plan.extract_steps("a") == [4]
    assert plan.group_steps("a") == [4]
    assert plan.extract_params() == Plan(toy_run()).extract_params()
    assert "steps" not in plan.extract_params()
    assert Plan(toy_run()).extract_steps("a") == [0, 4]  # null: every step


def test_a_run_draws_the_figures_plots_figures_lists():
    assert {"bnsl", "overview"} <= set(Plan(toy_run()).figures())
    assert list(Plan(toy_run(plots={"figures": ["overview", "bnsl"]})).figures()) == [
        "bnsl",
        "overview",
    ]
    with pytest.raises(ConfigError, match=r"plots.figures: \['bnls'\] are no figures; pick"):
        Plan(toy_run(plots={"figures": ["bnls"]})).figures()
    with pytest.raises(ConfigError, match=r"\['head_rank'\] draw a toy experiment .*head_rank"):
        Plan(toy_run(plots={"figures": ["head_rank"]})).figures()


def test_a_toy_models_shape_leaves_out_where_and_how_it_is_trained():
    plan = Plan(toy_run())
    assert plan.toy_shape("a") == {"hidden_size": 8} == plan.toy_shape("b")
    assert plan.steps("a") == [0, 4]
    # one V × d head, embeddings untied: the vocabulary enters twice
    assert plan.parameters("b") > plan.parameters("a")


def _linked(root: Path, model: str, step: int, **config) -> Path:
    path = root / f"results/checkpoints/{model}/step{step}/config.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(config))
    return path


def test_a_toy_checkpoint_of_another_model_is_named(tmp_path):
    cfg = toy_run()
    cfg["toy"]["train"] = {"sequence_length": 32}
    own = {"vocab_size": 64, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 1}
    own["max_position_embeddings"] = 32
    _linked(tmp_path, "a", 0, model_type="gpt_neox", **own)
    Plan(cfg, root=tmp_path).check_checkpoints("a")
    wrong = _linked(tmp_path, "a", 4, **{**own, "hidden_size": 16})
    with pytest.raises(ConfigError, match=rf"{wrong}: hidden_size 16 \(not 8\), as models.a say"):
        Plan(cfg, root=tmp_path).check_checkpoints("a")


def test_the_odd_checkpoint_of_a_local_model_is_named(tmp_path):
    arch = {"model_type": "gpt_neox", "hidden_size": 64, "num_hidden_layers": 2}
    for step in (4, 8, 12):
        _linked(tmp_path, "m", step, **arch)
    odd = _linked(tmp_path, "m", 16, **{**arch, "num_hidden_layers": 6})
    checkpoint(tmp_path / "run/checkpoint-4", 4)
    plan = Plan(config(tmp_path), root=tmp_path)
    with pytest.raises(
        ConfigError, match=rf"{odd}: num_hidden_layers 6 \(not 2\), as the model's other 3"
    ):
        plan.check_checkpoints("m")
