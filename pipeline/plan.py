"""The workflow's plan: which checkpoints each model has, where they live, which jobs they get
and what each job is told, decided once from the config (and, for ``steps: all``, from the
checkpoints present), so that the rules only declare and the scripts receive decisions.

Torch-free (Snakemake builds the DAG with it; a dry run imports neither torch nor matplotlib),
and testable with plain dicts: ``Plan(config)``.

Where a model's checkpoints live is its ``source``:

* ``toy``: trained by this workflow (``rules/checkpoints.smk``), on the toy schedule;
* ``hub``: a hub repository, one revision per checkpoint (``revision: "step{step}"``) and/or one
  subfolder per checkpoint (``subfolder: "checkpoint-{step}"``, a Trainer run pushed with
  ``hub_strategy="all_checkpoints"``);
* ``local``: a directory template on disk (``path: runs/my-model/checkpoint-{step}``).

What the files are is a format of ``pipeline.formats`` (the ``format`` key, else detected from
the files). ``steps: all`` (the run's, or a model's own) lists the complete checkpoints present
and those already linked under ``results/checkpoints/{model}/`` (a checkpoint deleted after it
was measured stays in the run and re-runs nothing).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
from collections import Counter
from functools import cached_property
from pathlib import Path

from pipeline.config import (
    ConfigError,
    digest,
    has_optimizer_states,
    results_dir,
    section,
    toy_language,
    toy_train,
)
from pipeline.toy.schedule import ToyModel, TrainConfig, pythia_schedule

#: Every per-checkpoint path, declared once, inside the run's results folder (``results_dir``).
PATHS = {
    "checkpoint": "checkpoints/{model}/step{step}",
    "checkpoint_config": "checkpoints/{model}/step{step}/config.json",
    "extract": "extract/{model}/step{step}.zarr",
    "update": "update/{model}/step{step}.zarr",
    "data": "data/{dataset}/{what}.zarr",  # what: corpus, frequency, eval, update
}


def _template_regex(template: str) -> re.Pattern:
    parts = template.split("{step}")
    return re.compile("(\\d+)".join(re.escape(p) for p in parts) + "$")


#: The config.json keys that fix a model's architecture (those present are compared).
ARCHITECTURE_KEYS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "max_position_embeddings",
    "head_rank",
)


def _architecture(config_json: str) -> dict:
    try:
        doc = json.loads(Path(config_json).read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"{config_json} cannot be read ({err}); delete its checkpoint directory and re-run"
        ) from None
    return {k: doc[k] for k in ARCHITECTURE_KEYS if k in doc}


def _step_of(config_json: str) -> int:
    return int(re.search(r"step(\d+)", Path(config_json).parent.name).group(1))


def _store_attrs(store: Path) -> dict | None:
    """A Zarr v3 store's root attributes, read from its zarr.json (None: no readable store)."""
    try:
        return json.loads((store / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError):
        return None


class Plan:
    """The plan of one config; ``root`` is the working directory (the results' parent)."""

    def __init__(self, config: dict, root: str | os.PathLike = "."):
        self.config = config
        self.root = Path(root)
        #: The run's results folder (``results/``, or ``results/{run}/`` for a named run).
        self.results = results_dir(config)
        self.models = list(config["models"])
        self.update = section(config, "update")
        self.extract = section(config, "extract")
        self.notes: list[str] = []  # said on the console when the DAG is built
        self._hashes: dict[tuple[str, int], str | None] = {}

    # --- models and their checkpoints -------------------------------------------------------

    def spec(self, model: str) -> dict:
        return self.config["models"][model]

    def source(self, model: str) -> str:
        return self.spec(model)["source"]

    def of_source(self, source: str) -> list[str]:
        return [m for m in self.models if self.source(m) == source]

    def template(self, kind: str) -> str:
        """The path template of ``kind`` (a key of ``PATHS``) in the run's results folder."""
        return f"{self.results}/{PATHS[kind]}"

    def path(self, kind: str, **fields) -> str:
        """The path of ``kind`` for these fields (model, step; dataset, what)."""
        return self.template(kind).format(**fields)

    def format(self, model: str) -> str | None:
        """The model's checkpoint format: its ``format`` key; else, for a hub model with
        subfolders, ``trainer``; for a local model, detected from its first checkpoint; None
        (detected by the job) otherwise."""
        spec = self.spec(model)
        if self.source(model) == "toy":
            return "transformers"
        if "format" in spec:
            return spec["format"]
        if self.source(model) == "hub":
            return "trainer" if "subfolder" in spec else None
        found = self.found(model)
        if not found:
            return None
        from pipeline import formats

        return formats.detect(next(iter(found.values()))).NAME

    def _listed(self, model: str):
        steps = self.spec(model).get("steps", self.config["steps"])
        return None if steps == "all" else sorted(steps)

    def toy_schedule(self) -> list[int]:
        train = TrainConfig(**section(self.config, "toy", "train"))
        return pythia_schedule(train.steps, train.save_every)

    def toy_shape(self, model: str) -> dict:
        """A toy model's shape: its entry's keys that are ``ToyModel``'s."""
        spec = self.spec(model)
        shape = {f.name for f in dataclasses.fields(ToyModel)}
        return {k: spec[k] for k in sorted(spec) if k in shape}

    def parameters(self, model: str) -> float:
        """A model's parameter count (a toy's from its shape, others' ``parameters``, else 1e9):
        what the resources of its jobs are sized by."""
        if self.source(model) == "toy":
            vocab = self.toy_language(self.language_of(model))["vocab_size"]
            return ToyModel(**self.toy_shape(model)).n_params(vocab)
        return self.spec(model).get("parameters", 1e9)

    def provenance(self) -> dict:
        """What the summary records of the run: the config's digest, the fit settings and how
        each toy model was trained (its language, training settings and head rank)."""
        toy = {}
        for m in self.of_source("toy"):
            language = self.toy_language(self.language_of(m))
            toy[m] = {
                "language": self.language_of(m) or "toy",
                **{f"language_{k}": language[k] for k in ("kind", "vocab_size") if k in language},
                "learning_rate": self.toy_train(m)["learning_rate"],
                "hidden_size": self.spec(m)["hidden_size"],
                "head_rank": self.spec(m).get("head_rank"),
                "intervention": TrainConfig(**self.toy_train(m)).intervention,
            }
        return {
            "run": self.config.get("run") or "",
            "results": self.results,
            "config_sha256": digest(self.config),
            "fit": section(self.config, "fit"),
            **({"toy_models": toy} if toy else {}),
        }

    def figures(self) -> dict:
        """The run's figures (``pipeline.plots.run_figures``) by name, those of
        ``plots.figures`` only where it lists some."""
        from pipeline.plots import FIGURES, run_figures

        directions = {m: self.direction(m) for m in self.models}
        figures = run_figures(self.provenance().get("toy_models", {}), directions)
        listed = section(self.config, "plots")["figures"]
        if listed is None:
            return figures
        unknown = [n for n in listed if n not in FIGURES]
        if unknown:
            raise ConfigError(
                f"plots.figures: {unknown} are no figures; pick from {', '.join(FIGURES)}"
            )
        idle = [n for n in listed if n not in figures]
        if idle:
            raise ConfigError(
                f"plots.figures: {idle} draw a toy experiment this run has no model of "
                f"({', '.join(sorted({str(FIGURES[n].experiment) for n in idle}))}); drop them"
            )
        return {n: s for n, s in figures.items() if n in listed}

    def linked(self, model: str) -> list[int]:
        """Steps already linked under results/checkpoints/{model}/ (measured or about to be)."""
        pattern = str(self.root / self.template("checkpoint_config")).format(model=model, step="*")
        rx = _template_regex(
            str(self.root / self.template("checkpoint_config")).format(model=model, step="{step}")
        )
        return sorted(int(m.group(1)) for p in glob.glob(pattern) if (m := rx.match(p)))

    def expected_architecture(self, model: str) -> dict | None:
        """What a toy model's checkpoints' config.json must say (its entry's shape, its
        language's vocabulary, the training context); None for others (their checkpoints must
        agree with each other)."""
        if self.source(model) != "toy":
            return None
        shape = self.toy_shape(model)
        expected = {
            "vocab_size": self.toy_language(self.language_of(model))["vocab_size"],
            "hidden_size": shape["hidden_size"],
            "num_hidden_layers": shape.get("layers", 2),
            "num_attention_heads": shape.get("heads", 1),
            "max_position_embeddings": self.toy_train(model)["sequence_length"],
        }
        if shape.get("head_rank") is not None:
            expected["head_rank"] = shape["head_rank"]
        return expected

    def check_checkpoints(self, model: str, paths: list[str] | None = None) -> None:
        """Raise ``ConfigError`` naming a checkpoint (its config.json) that belongs to another
        model: a toy model's that contradicts its entry, another model's that disagrees in its
        architecture with the model's other checkpoints (the odd one out is named). ``paths``:
        config.json files to check, by default every linked one."""
        if paths is None:
            pattern = str(self.root / self.template("checkpoint_config")).format(
                model=model, step="*"
            )
            paths = sorted(glob.glob(pattern))
        archs = {p: _architecture(p) for p in paths}
        expected = self.expected_architecture(model)
        if expected is None and len(archs) > 1:
            counts = Counter(json.dumps(a, sort_keys=True) for a in archs.values())
            usual = counts.most_common(1)[0][0]
            expected, whose = json.loads(usual), f"the model's other {counts[usual]} checkpoints"
        else:
            whose = f"models.{model}"
        self._check_duplicates(model, paths)
        for path, arch in archs.items():
            wrong = {k: (arch.get(k), v) for k, v in (expected or {}).items() if arch.get(k) != v}
            if wrong:
                detail = ", ".join(f"{k} {a} (not {b})" for k, (a, b) in wrong.items())
                raise ConfigError(
                    f"{path}: {detail}, as {whose} say: this checkpoint belongs to another "
                    "model; delete its directory and re-run, which links or trains it again"
                )

    def _check_duplicates(self, model: str, paths: list[str]) -> None:
        """Under ``checkpoints.duplicates: fail``, raise ``ConfigError`` for checkpoints with
        identical weights, from the hashes their ``source.json`` records: before any of them is
        extracted, and with nothing deleted (the reduction also checks its stores' hashes)."""
        if section(self.config, "checkpoints")["duplicates"] != "fail":
            return
        first: dict[str, int] = {}
        same = []
        for path in sorted(paths, key=lambda p: _step_of(p)):
            try:
                sha = json.loads((Path(path).parent / "source.json").read_text())["weights_sha256"]
            except (OSError, ValueError, KeyError):
                continue  # linked by an older version: the reduction's check applies
            step = _step_of(path)
            if sha in first:
                same.append(f"step {step} = step {first[sha]}")
            else:
                first[sha] = step
        if same:
            raise ConfigError(
                f"models.{model}: checkpoints with identical weights: {', '.join(same)} "
                "(checkpoints.duplicates: fail; nothing was extracted or deleted). Drop the "
                "repeated steps from steps, or set checkpoints.duplicates to warn or skip"
            )

    def unchanged(self, model: str, step: int, store: str) -> bool:
        """Whether the store (``extract`` or ``update``) of (model, step) exists and was
        measured on the weights its checkpoints hold now (for a displacement, the next one's
        too). For toy models, whose weights are small enough to hash while the DAG is built:
        a re-training that reproduces a checkpoint byte for byte then re-measures nothing
        (the rules take such a checkpoint as ``ancient``)."""
        if self.source(model) != "toy":
            return False
        attrs = _store_attrs(self.root / self.path(store, model=model, step=step))
        if attrs is None:
            return False
        hashes = [("weights_sha256", step)]
        later = self.next_step(model, step) if store == "update" else None
        if later is not None:
            hashes.append(("next_weights_sha256", later))
        return all(attrs.get(key) == self._weights_sha256(model, s) for key, s in hashes)

    def check_measured(self, model: str, store: str) -> None:
        """Raise ``ConfigError`` naming a toy model's store (``extract`` or ``update``) measured
        on other weights than its checkpoint holds now: a re-training that did not reproduce
        them, with the store kept as ``ancient``."""
        if self.source(model) != "toy":
            return
        steps = self.extract_steps(model) if store == "extract" else self.update_steps(model)
        for step in steps:
            path = self.root / self.path(store, model=model, step=step)
            attrs = _store_attrs(path)
            now = self._weights_sha256(model, step)
            if attrs is not None and now is not None and attrs.get("weights_sha256") != now:
                raise ConfigError(
                    f"{path} was measured on weights of sha256 "
                    f"{str(attrs.get('weights_sha256'))[:12]}…, but "
                    f"{self.path('checkpoint', model=model, step=step)} now holds {now[:12]}… (the "
                    "model was re-trained and came out different): delete the store and re-run"
                )

    def _weights_sha256(self, model: str, step: int) -> str | None:
        key = (model, step)
        if key not in self._hashes:
            from pipeline import formats

            path = self.root / self.path("checkpoint", model=model, step=step)
            try:
                self._hashes[key] = formats.weights_sha256(path)
            except (OSError, ValueError):  # not there (yet), or incomplete
                self._hashes[key] = None
        return self._hashes[key]

    def found(self, model: str) -> dict[int, str]:
        """A local model's complete checkpoint directories present on disk, by step."""
        return self._found[model]

    @cached_property
    def _found(self) -> dict[str, dict[int, str]]:
        from pipeline import formats

        out = {}
        for model in self.of_source("local"):
            spec = self.spec(model)
            template = os.path.expanduser(spec["path"])
            rx = _template_regex(template)
            hits = {}
            for path in glob.glob(template.replace("{step}", "*")):
                match = rx.match(path)
                if not match or not os.path.isdir(path):
                    continue
                try:
                    fmt = formats.resolve(path, spec.get("format"))
                    why = fmt.problem(path, spec.get("allow_pickle", False))
                except ValueError as err:
                    why = str(err)
                if why is None:
                    hits[int(match.group(1))] = path
                else:
                    self.notes.append(f"models.{model}: skipping {path}: {why}")
            out[model] = dict(sorted(hits.items()))
        return out

    def steps(self, model: str) -> list[int]:
        """The model's measured steps: its own ``steps``, else the run's; ``all`` discovers."""
        return self._steps[model]

    @cached_property
    def _steps(self) -> dict[str, list[int]]:
        out = {}
        for model in self.models:
            listed, source = self._listed(model), self.source(model)
            if source == "toy":
                out[model] = listed if listed is not None else self.toy_schedule()
            elif listed is not None:
                out[model] = listed
            elif source == "local":
                out[model] = sorted(set(self.found(model)) | set(self.linked(model)))
            else:
                out[model] = sorted(set(self.hub_steps(model)) | set(self.linked(model)))
            if not out[model]:
                where = self.spec(model).get("path") or self.spec(model).get("repo_id")
                raise ConfigError(
                    f"models.{model}: steps: all found no complete checkpoint at {where}; "
                    "check the path template (it needs {step}) or wait for the first checkpoint"
                )
        self._check_distinct(out)
        return out

    def hub_steps(self, model: str) -> list[int]:
        """A hub model's checkpoints: the revisions matching its revision template, or the
        subfolders matching its subfolder template (the repository's file listing, read from
        the local hub cache when offline)."""
        from pipeline.hub import list_folders, list_revisions

        spec = self.spec(model)
        if "subfolder" in spec:
            rx = _template_regex(spec["subfolder"])
            names = list_folders(spec["repo_id"], spec.get("revision", "main"))
        else:
            rx = _template_regex(spec.get("revision", "step{step}"))
            names = list_revisions(spec["repo_id"])
        return sorted({int(m.group(1)) for n in names if (m := rx.match(n))})

    def _check_distinct(self, steps: dict[str, list[int]]) -> None:
        seen: dict[str, tuple[str, int]] = {}
        for model in self.of_source("local"):
            for step in steps[model]:
                path = os.path.realpath(self.source_dir(model, step))
                if path in seen:
                    other = seen[path]
                    raise ConfigError(
                        f"models.{model} step {step} and models.{other[0]} step {other[1]} "
                        f"resolve to the same directory {path}; give each model its own path"
                    )
                seen[path] = (model, step)

    def source_dir(self, model: str, step: int) -> str:
        """Where a local model's checkpoint lies (the path template at ``step``)."""
        found = self.found(model).get(step)
        return found or os.path.expanduser(self.spec(model)["path"]).format(step=step)

    def revision(self, model: str, step: int) -> str:
        spec = self.spec(model)
        default = "main" if "subfolder" in spec else "step{step}"
        return spec.get("revision", default).format(step=step)

    def group(self, model: str) -> tuple[str, int | None]:
        """The model's group (its entry's ``group``: the entry its seeds came from, or its own
        name) and its training seed (toy models; None for checkpoints trained elsewhere)."""
        seed = self.toy_train(model)["seed"] if self.source(model) == "toy" else None
        return self.spec(model).get("group", model), seed

    def seed_groups(self) -> dict[str, list[str]]:
        """The groups of two or more models (the seeds of one setting), each with its models in
        the config's order; its members must share an evaluation set."""
        groups: dict[str, list[str]] = {}
        for m in self.models:
            groups.setdefault(self.group(m)[0], []).append(m)
        out = {g: ms for g, ms in groups.items() if len(ms) > 1}
        for g, ms in out.items():
            stores = {self.eval_store(m) for m in ms}
            if len(stores) > 1:
                raise ConfigError(
                    f"group {g}: its models {ms} are measured on different evaluation sets "
                    f"({sorted(stores)}); give them one language, or separate groups"
                )
        return out

    def group_steps(self, group: str) -> list[int]:
        """The extracted steps every model of ``group`` has."""
        members = self.seed_groups()[group]
        return sorted(set.intersection(*(set(self.extract_steps(m)) for m in members)))

    def subfolder(self, model: str, step: int) -> str | None:
        sub = self.spec(model).get("subfolder")
        return sub.format(step=step) if sub else None

    # --- the extract stage ---------------------------------------------------------------------

    def extract_steps(self, model: str) -> list[int]:
        """The steps of ``model`` that get an extraction job: ``extract.steps`` among its steps,
        or all of them."""
        listed = self.extract["steps"]
        steps = self.steps(model)
        return steps if listed is None else [s for s in steps if s in set(listed)]

    def extract_params(self) -> dict:
        """The extract section without the list of steps (a per-checkpoint job must not depend
        on it: adding a step re-runs only the job it adds)."""
        return {k: v for k, v in self.extract.items() if k != "steps"}

    # --- the update stage ----------------------------------------------------------------------

    def has_optimizer(self, model: str) -> bool:
        """Whether the model's checkpoints carry a state the update stage can step."""
        spec = self.spec(model)
        if self.source(model) == "toy":
            return has_optimizer_states(self.config, model)
        from pipeline import formats

        fmt = self.format(model)
        if fmt is None or not formats.get(fmt).OPTIMIZER_EXPECTED:
            return False
        if self.source(model) == "local":
            steps = self.update_candidates(model)
            lacking = [
                s
                for s in steps
                if s in self.found(model)
                and not formats.get(fmt).has_optimizer(self.found(model)[s])
            ]
            if lacking:
                self._no_state(model, f"checkpoints {lacking} have no optimizer state")
                return False
        if formats.get(fmt).OPTIMIZER_PICKLED and not spec.get("allow_pickle"):
            self._no_state(model, "its optimizer state is a pickle and allow_pickle is not set")
            return False
        return True

    def _no_state(self, model: str, why: str) -> None:
        if self.update["direction"] == "optimizer":
            raise ConfigError(
                f"models.{model}: update.direction is optimizer, but {why}; use "
                "update.direction: auto (displacements where there is no state)"
            )
        self.notes.append(
            f"models.{model}: {why}; the update stage follows its displacements between checkpoints"
        )

    def direction(self, model: str) -> str:
        """``optimizer`` where the model's checkpoints carry a state that is stepped (and the
        config does not ask for displacements), else ``displacement``."""
        return self._directions[model]

    @cached_property
    def _directions(self) -> dict[str, str]:
        wanted = self.update["direction"]
        return {
            m: "optimizer" if wanted != "displacement" and self.has_optimizer(m) else "displacement"
            for m in self.models
        }

    def update_candidates(self, model: str) -> list[int]:
        steps = self.steps(model)
        listed = self.update["steps"]
        return [s for s in (sorted(listed) if listed is not None else steps) if s in steps]

    def next_step(self, model: str, step: int) -> int | None:
        """The next measured step after ``step`` (the partner of a displacement), or None."""
        if self.direction(model) == "optimizer":
            return None
        return next((s for s in self.steps(model) if s > step), None)

    def check_update_steps(self) -> None:
        """Every step listed in ``update.steps`` gets a job for some model, else ``ConfigError``
        (a step no model measures, or the last checkpoint of models that follow displacements,
        would silently plan nothing)."""
        planned = {s for m in self.models for s in self.update_steps(m)}  # (notes too)
        listed = self.update["steps"]
        if not listed:
            return
        idle = sorted(set(listed) - planned)
        if not idle:
            return
        last = sorted(
            {s for m in self.models for s in idle if self.steps(m) and s == self.steps(m)[-1]}
        )
        why = (
            f"{last} {'is' if len(last) == 1 else 'are'} the last checkpoint of models that "
            "follow displacements, which need a later checkpoint"
            if last
            else "no model measures them (they are not in steps)"
        )
        raise ConfigError(
            f"update.steps: {idle} get no update job: {why}; drop them from update.steps, or "
            "add the checkpoints they need to steps"
        )

    def update_steps(self, model: str) -> list[int]:
        """The steps of ``model`` that get an update job."""
        steps = self.update_candidates(model)
        if self.direction(model) == "optimizer":
            return steps
        kept = [s for s in steps if self.next_step(model, s) is not None]
        if steps and not kept:
            self.notes.append(
                f"models.{model}: update.steps {steps} have no later checkpoint to take the "
                "displacement to; no update job is planned for this model"
            )
        return kept

    # --- datasets ----------------------------------------------------------------------------
    # A dataset is a folder of results/data/: the run's own (named by eval.name, frequency.name
    # and update.data.name) or a named toy language (toy.languages). Each store of a folder is
    # built from a section (eval, frequency, update.data): the run's own section, or for a named
    # language the run's cut for its toy stream; the files a section reads follow from its source.

    def language_of(self, model: str) -> str | None:
        """The named toy language (toy.languages) a model is trained and measured on, or None:
        the run's own data (toy.language, eval, frequency, update.data)."""
        spec = self.spec(model)
        return spec.get("language") if spec["source"] == "toy" else None

    @property
    def languages(self) -> list[str]:
        """Toy languages beside the run's own (toy.languages), each a dataset of its own."""
        return list(section(self.config, "toy").get("languages") or {})

    @property
    def uses_toy(self) -> bool:
        """Whether the run's own toy language is trained on or sampled (its corpus is built)."""
        sources = (self.config["eval"]["source"], self.config["frequency"]["source"])
        return bool(self.of_source("toy")) or "toy" in sources

    @property
    def corpora(self) -> list[str]:
        """The toy corpora built: the run's own (``toy``) where used, and each named language's."""
        return (["toy"] if self.uses_toy else []) + self.languages

    def toy_language(self, language: str | None = None) -> dict:
        """A toy language's spec (None or ``toy``: toy.language; else toy.languages')."""
        return toy_language(self.config, None if language in (None, "toy") else language)

    def toy_train(self, model: str) -> dict:
        """A toy model's training settings: toy.train with its own ``train`` overrides."""
        return toy_train(self.config, model)

    def corpus(self, language: str | None = None) -> str:
        """The corpus store of a toy language (None: the run's own)."""
        return self.path("data", dataset=language or "toy", what="corpus")

    def store(self, dataset: str, what: str) -> str:
        return self.path("data", dataset=dataset, what=what)

    def eval_store(self, model: str | None = None) -> str:
        """The evaluation set a model is measured on (its language's, else the run's)."""
        name = (self.language_of(model) if model else None) or self.config["eval"]["name"]
        return self.store(name, "eval")

    def _frequency_of(self, dataset: str) -> str:
        """The frequency table that bins a dataset's tokens (a language's own, else the run's)."""
        name = dataset if dataset in self.languages else self.config["frequency"]["name"]
        return self.store(name, "frequency")

    def eval_params(self, dataset: str) -> dict:
        """The eval section of a dataset; a named language's held-out stream is cut alike."""
        spec = section(self.config, "eval")
        if dataset in self.languages:
            keep = {k: spec[k] for k in ("sequences", "context_length")}
            spec = {"name": dataset, "source": "toy", **keep}
        return dict(sorted(spec.items()))

    def frequency_params(self, dataset: str) -> dict:
        """The frequency section of a dataset, with the toy language's vocabulary where the
        source is toy (a named language: the counts of its own training stream)."""
        if dataset in self.languages:
            spec = {"name": dataset, "source": "toy"}
            spec["vocab_size"] = self.toy_language(dataset)["vocab_size"]
        else:
            spec = dict(self.config["frequency"])
            if spec["source"] == "toy":
                spec.setdefault("vocab_size", self.toy_language()["vocab_size"])
        return dict(sorted(spec.items()))

    @property
    def update_data(self) -> dict:
        """Where models with optimizer states take their steps: the toy language's batches by
        default (a model on a named toy language takes them from that language)."""
        return self.update["data"] or {"name": "toy", "source": "toy"}

    def update_batches_data(self, dataset: str) -> dict:
        """The update.data section of a folder of update batches (a named language's: toy)."""
        if dataset in self.languages:
            return {"name": dataset, "source": "toy"}
        return self.update_data

    def update_batches_language(self, dataset: str) -> dict | None:
        """The toy language update batches are drawn from (fresh from its generator: batches
        no model has trained on), where their source is toy."""
        if self.update_batches_data(dataset)["source"] != "toy":
            return None
        return self.toy_language(dataset if dataset in self.languages else None)

    def _source_files(self, spec: dict, dataset: str) -> dict:
        """The files a data section reads, by its source."""
        source = spec["source"]
        if source == "toy":
            return {"corpus": self.corpus(dataset if dataset in self.languages else None)}
        if source == "text":
            return {"texts": spec["paths"]}
        if source in ("tokens", "counts"):
            return {source: spec["path"]}
        if source == "megatron":
            return {"shards": [f"{p}.{ext}" for p in spec["paths"] for ext in ("bin", "idx")]}
        return {}  # hub datasets are downloaded by the job

    def eval_inputs(self, dataset: str) -> dict:
        """The evaluation set's inputs: the frequency table, and the files its source reads."""
        spec = self.eval_params(dataset)
        return {"frequency": self._frequency_of(dataset), **self._source_files(spec, dataset)}

    def frequency_inputs(self, dataset: str) -> dict:
        return self._source_files(self.frequency_params(dataset), dataset)

    def update_batches_inputs(self, dataset: str) -> dict:
        """The update batches' inputs: the frequency table (for bins), and the files they read
        (toy batches are drawn from the language itself, not from its corpus)."""
        spec = self.update_batches_data(dataset)
        files = {} if spec["source"] == "toy" else self._source_files(spec, dataset)
        return {"frequency": self._frequency_of(dataset), **files}

    # --- the update stage ----------------------------------------------------------------------

    def update_dataset(self, model: str) -> str:
        """The results/data/ folder of a model's update batches."""
        return self.language_of(model) or self.update_data["name"]

    @property
    def update_datasets(self) -> list[str]:
        """The folders that need update batches: those of the models that take optimizer steps."""
        stepped = [m for m in self.models if self.direction(m) == "optimizer"]
        return sorted({self.update_dataset(m) for m in stepped})

    def update_inputs(self, model: str, step: int) -> dict:
        """An update job's inputs: the checkpoint, the evaluation set and, for an optimizer
        step, the update batches; for a displacement, the next checkpoint."""
        inputs = {
            "config": self.path("checkpoint_config", model=model, step=step),
            "eval": self.eval_store(model),
        }
        if self.direction(model) == "optimizer":
            inputs["batches"] = self.store(self.update_dataset(model), "update")
            return inputs
        later = self.next_step(model, step)
        if later is None:
            raise ValueError(
                f"{model} step {step} is the last listed step: there is no next checkpoint to "
                "take the displacement to"
            )
        inputs["next_config"] = self.path("checkpoint_config", model=model, step=later)
        return inputs

    def update_params(self, model: str) -> dict:
        """The update section without the list of steps (a per-checkpoint job must not depend
        on it: adding a step re-runs only the jobs it touches), with the planned direction."""
        return {
            **{k: v for k, v in self.update.items() if k != "steps"},
            "direction": self.direction(model),
        }

    def update_schedule(self, model: str) -> dict | None:
        """The training settings whose schedule a toy model's saved learning rates must follow
        (the update stage checks them), for a toy model that takes optimizer steps; else None
        (other formats check their own schedule: a Trainer's scheduler.pt, OLMo's config)."""
        if self.source(model) != "toy" or self.direction(model) != "optimizer":
            return None
        return self.toy_train(model)

    def update_stores(self, model: str) -> list[str]:
        return [self.path("update", model=model, step=s) for s in self.update_steps(model)]

    # --- the training-loss curve ---------------------------------------------------------------

    def train_curve(self, model: str) -> tuple[str, str | None] | None:
        """The model's training-loss log and the format that reads it (None: a table), or None:
        the toy's table, a hub model's ``train_loss`` table, or the ``trainer_state.json`` of a
        Trainer run's last checkpoint."""
        spec = self.spec(model)
        if self.source(model) == "toy":
            return f"{self.results}/checkpoints/{model}/train_loss.tsv", None
        if "train_loss" in spec:
            return spec["train_loss"], None
        from pipeline import formats

        fmt = self.format(model)
        if fmt is not None and formats.get(fmt).TRAIN_LOG is not None:
            last = self.steps(model)[-1]
            return self.path("checkpoint_config", model=model, step=last), fmt
        return None
