"""A Hugging Face ``transformers.Trainer`` checkpoint: ``checkpoint-{N}/`` as ``Trainer`` saves
it, a transformers model directory (``pipeline.formats.transformers``) with

* ``trainer_state.json``: ``global_step`` (N) and ``log_history``, whose entries with a ``loss``
  are the training loss logged every ``logging_steps`` steps (the dense curve that the Zero-sum
  learning paper fits);
* ``optimizer.pt``: ``torch.optim.AdamW``'s state dict, its tensors indexed by position in the
  Trainer's two parameter groups (decay, then no decay, by ``Trainer.get_decay_parameter_names``,
  each in ``model.named_parameters()`` order); its group learning rate is the one the scheduler
  set after step N, i.e. the learning rate of step N + 1;
* ``scheduler.pt`` (the scheduler's state: ``last_epoch`` = N, ``_last_lr``) and
  ``training_args.bin`` (a pickled ``TrainingArguments``: ``max_grad_norm``, the schedule).

The pickles are read with ``torch.load(weights_only=True)`` only, and only with the model's
``allow_pickle`` opt-in; ``training_args.bin`` only through an explicit allowlist of the types it
is made of (``ARGS_TYPES``), never with unrestricted unpickling. Where it cannot be read so, the
clipping norm comes from the model's config entry (``max_grad_norm``), and the optimizer state's
``provenance`` says which.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

from pipeline.formats import pickles
from pipeline.formats import transformers as plain

log = logging.getLogger(__name__)

NAME = "trainer"
DESCRIPTION = (
    "a transformers.Trainer checkpoint: a model directory with trainer_state.json "
    "(and optimizer.pt, scheduler.pt, training_args.bin)"
)
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
ARGS_FILE = "training_args.bin"
PICKLES = [OPTIMIZER_FILE, SCHEDULER_FILE, ARGS_FILE]
#: whether its checkpoints are expected to carry an optimizer state, and whether that state is
#: a pickle (read only with allow_pickle)
OPTIMIZER_EXPECTED = True
OPTIMIZER_PICKLED = True
#: whether every file it reads is a pickle (read only with allow_pickle)
PICKLES_ONLY = False
TRAIN_LOG = STATE_FILE


def patterns(allow_pickle: bool = False) -> list[str]:
    """The model directory's files, trainer_state.json, and the pickles with the opt-in."""
    return plain.patterns(False) + [STATE_FILE] + (PICKLES if allow_pickle else [])


def matches(path: str | os.PathLike) -> bool:
    return (Path(path) / STATE_FILE).exists() and (Path(path) / "config.json").exists()


weight_files = plain.weight_files
write_config = plain.write_config
load_model = plain.load_model


def read_trainer_state(path: str | os.PathLike) -> dict:
    file = Path(path) / STATE_FILE
    try:
        state = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {file}: {err}") from None
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        raise ValueError(f"{file} has no integer global_step: it is not a Trainer's state")
    return state


def problem(path: str | os.PathLike, allow_pickle: bool = False) -> str | None:
    """Why ``path`` is not a complete Trainer checkpoint, or None."""
    why = plain.problem(path, allow_pickle)
    if why is not None:
        return why
    try:
        read_trainer_state(path)
    except ValueError as err:
        return str(err)
    return None


def linked_files(src: Path) -> list[Path]:
    # rng_state*.pth and other trainer pickles are never read
    keep = {STATE_FILE, *PICKLES}
    return [
        f
        for f in plain.linked_files(src)
        if f.name in keep or not (f.suffix in (".pt", ".pth") or f.name.startswith("rng_state"))
    ]


def has_optimizer(path: str | os.PathLike) -> bool:
    return (Path(path) / OPTIMIZER_FILE).exists()


def read_train_log(path: str | os.PathLike):
    """The training loss of ``log_history`` (entries with ``loss`` and ``step``): steps, losses."""
    import numpy as np

    history = read_trainer_state(Path(path).parent if Path(path).is_file() else path)
    rows = [
        (e["step"], e["loss"])
        for e in history.get("log_history", [])
        if "loss" in e and "step" in e
    ]
    if not rows:
        raise ValueError(
            f"{path}: log_history has no training loss; train with logging_steps set "
            "(logging_steps=1 gives the dense curve the fit wants)"
        )
    steps, loss = (np.array(c, dtype=float) for c in zip(*rows))
    return steps, loss


# --- the optimizer state -------------------------------------------------------------------


def _torch_load(file: Path, what: str):
    return pickles.load(file, what)


def args_types() -> list:
    """The types a pickled ``TrainingArguments`` is made of: the allowlist it is read with."""
    import enum

    import transformers.trainer_utils as tu
    import transformers.training_args as ta
    from transformers import TrainingArguments

    types = [TrainingArguments]
    for module in (ta, tu):
        types += [
            v
            for v in vars(module).values()
            if isinstance(v, type) and issubclass(v, enum.Enum) and v.__module__ == module.__name__
        ]
    # the accelerator's settings and process state: dataclasses of plain values, rebuilt
    # without running their constructors
    from accelerate.state import PartialState
    from accelerate.utils.dataclasses import DistributedType
    from transformers.trainer_pt_utils import AcceleratorConfig

    return [*types, AcceleratorConfig, PartialState, DistributedType]


def read_training_args(path: str | os.PathLike):
    """``training_args.bin`` through the allowlist ``args_types()``; (args, None) or (None, why)."""

    file = Path(path) / ARGS_FILE
    if not file.exists():
        return None, f"no {ARGS_FILE}"
    try:
        args = pickles.load(file, "the Trainer's arguments", allowed=args_types())
    except ValueError as err:  # a type outside the allowlist: refused, never executed
        return None, str(err)
    return args, None


def scheduled_lr(args, step: int) -> float:
    """The learning rate the Trainer's scheduler (built from ``args`` as the Trainer builds it)
    gives optimizer step ``step + 1``, i.e. after ``step`` scheduler steps."""
    import torch
    from transformers import get_scheduler

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=args.learning_rate)
    max_steps = int(args.max_steps)
    warmup = args.get_warmup_steps(max_steps)
    sched = get_scheduler(
        args.lr_scheduler_type,
        opt,
        num_warmup_steps=warmup,
        num_training_steps=max_steps,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs or {},
    )
    for _ in range(step):
        opt.step()
        sched.step()
    return float(opt.param_groups[0]["lr"])


def parameter_groups(model) -> tuple[list[str], list[str]]:
    """The Trainer's two groups of parameter names, decay and no decay, in the order
    ``Trainer.create_optimizer`` lists them (the Trainer's own rule)."""
    from transformers import Trainer

    decay = set(Trainer.get_decay_parameter_names(None, model))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [n for n, _ in named if n in decay], [n for n, _ in named if n not in decay]


def read_optimizer(
    path: str | os.PathLike,
    model,
    allow_pickle: bool = False,
    max_grad_norm: float | None = None,
    step: int | None = None,
):
    """``optimizer.pt`` of a Trainer checkpoint as the update stage's ``OptimizerState``.

    Parameters map onto names by the Trainer's grouping rule and are checked tensor by tensor
    against ``model``'s shapes; the step count against ``trainer_state.json`` (and ``step``, the
    checkpoint's own step, where given); the learning rate of the next step (the saved group
    rate) against ``scheduler.pt`` and against the schedule rebuilt from ``training_args.bin``.
    ``max_grad_norm`` (the config's) is used only where ``training_args.bin`` cannot be read.
    """
    from pipeline.optimizer import OptimizerState

    path = Path(path)
    file = path / OPTIMIZER_FILE
    if not allow_pickle:
        raise ValueError(
            f"{file} is a pickle: set allow_pickle: true on this model to read it (weights_only "
            "loading, no code runs), or analyse the model along displacements "
            "(update.direction: displacement)"
        )
    if not file.exists():
        raise FileNotFoundError(
            f"{path} has no {OPTIMIZER_FILE} (saved with save_only_model?): this checkpoint can "
            "only be analysed along the displacement to the next one (update.direction: auto "
            "or displacement)"
        )
    state = read_trainer_state(path)
    saved_step = state["global_step"]
    if step is not None and saved_step != step:
        raise ValueError(
            f"{path / STATE_FILE}: global_step {saved_step}, but the checkpoint is step {step}: "
            "its files come from another checkpoint"
        )
    raw = _torch_load(file, "the Trainer's optimizer state")
    if not isinstance(raw, dict) or not {"state", "param_groups"} <= set(raw):
        raise ValueError(f"{file} is not an optimizer state dict (no 'state' and 'param_groups')")
    groups = list(raw["param_groups"])
    moments, no_decay = _moments(file, raw, groups, model, saved_step)
    g0 = groups[0]
    for key in ("lr", "betas", "eps"):
        if any(g[key] != g0[key] for g in groups):
            raise ValueError(f"{file}: the parameter groups differ in {key}")
    lr, clip, provenance = _learning_rate(path, float(g0["lr"]), g0, saved_step, max_grad_norm)
    return OptimizerState(
        step=saved_step,
        lr=lr,
        betas=tuple(float(b) for b in g0["betas"]),
        eps=float(g0["eps"]),
        weight_decay=float(groups[0]["weight_decay"]),
        moments=moments,
        no_weight_decay=no_decay,
        max_grad_norm=clip,
        loss_denominator="labels",  # the Trainer's: the mean over the batch's label tokens
        provenance=provenance,
    )


def _moments(file: Path, raw: dict, groups: list, model, saved_step: int) -> tuple[dict, list]:
    """AdamW's moments by parameter name (the Trainer's grouping rule, checked against the
    model's shapes) and the names without weight decay; the step count must be ``saved_step``."""
    decay, no_decay = parameter_groups(model)
    expected = [decay, no_decay] if no_decay or len(groups) == 2 else [decay]
    sizes = [len(g["params"]) for g in groups]
    if sizes != [len(e) for e in expected]:
        raise ValueError(
            f"{file}: parameter groups of {sizes} tensors, but the Trainer's rule groups this "
            f"model's parameters as {[len(e) for e in expected]} (decay, no decay): the state "
            "was saved for another model or by another optimizer setup"
        )
    params = dict(model.named_parameters())
    moments, steps = {}, set()
    for group, names in zip(groups, expected):
        for index, name in zip(group["params"], names):
            st = raw["state"].get(index)
            if not st:  # never stepped
                continue
            m, v = st["exp_avg"].float(), st["exp_avg_sq"].float()
            if m.shape != params[name].shape or v.shape != params[name].shape:
                raise ValueError(
                    f"{file}: the moments of tensor {index} ({name} by the Trainer's grouping) "
                    f"have shape {tuple(m.shape)}, the model's {name} {tuple(params[name].shape)}: "
                    "the optimizer state belongs to another model"
                )
            moments[name] = (m, v)
            steps.add(int(st["step"]))
    if len(steps) > 1:
        raise ValueError(f"{file}: parameters were stepped unequally often ({sorted(steps)})")
    opt_step = steps.pop() if steps else 0
    if opt_step != saved_step:
        raise ValueError(
            f"{file}: AdamW's step count is {opt_step}, {STATE_FILE} says global_step "
            f"{saved_step}: the files do not belong together"
        )
    return moments, sorted(no_decay)


def _learning_rate(
    path: Path, lr: float, g0: dict, saved_step: int, max_grad_norm: float | None
) -> tuple[float, float | None, dict]:
    """The next step's learning rate ``lr`` (the saved group rate) checked against
    ``scheduler.pt`` and the schedule of ``training_args.bin``; the clipping norm; where each
    came from."""
    file = path / OPTIMIZER_FILE
    provenance = {
        "learning_rate": f"{OPTIMIZER_FILE} (the rate the scheduler set for the next step)"
    }
    sched_file = path / SCHEDULER_FILE
    if sched_file.exists():
        sched = _torch_load(sched_file, "the Trainer's scheduler state")
        last = sched.get("_last_lr") or [lr]
        if sched.get("last_epoch") != saved_step or not math.isclose(last[0], lr, rel_tol=1e-6):
            raise ValueError(
                f"{sched_file}: last_epoch {sched.get('last_epoch')} and rate {last[0]:.6g}, but "
                f"the optimizer state is at step {saved_step} with rate {lr:.6g}: the files do "
                "not belong together"
            )
    args, why = read_training_args(path)
    if args is not None:
        want = scheduled_lr(args, saved_step)
        if not math.isclose(lr, want, rel_tol=1e-5, abs_tol=1e-12):
            raise ValueError(
                f"{file}: the saved learning rate {lr:.6g} is not what the schedule of "
                f"{ARGS_FILE} ({args.lr_scheduler_type}, peak {args.learning_rate:g}) gives step "
                f"{saved_step + 1} ({want:.6g}): the files do not belong together"
            )
        clip = float(args.max_grad_norm) if args.max_grad_norm else None
        provenance["max_grad_norm"] = ARGS_FILE
        provenance["schedule"] = f"checked against {ARGS_FILE}"
    else:
        clip = max_grad_norm
        provenance["max_grad_norm"] = f"the config's max_grad_norm ({why})"
        provenance["schedule"] = f"not checked ({why})"
    if lr == 0:  # the end of a schedule that decays to 0: as for OLMo's (pipeline.formats.olmo)
        lr = float(g0.get("initial_lr") or 0) or (args.learning_rate if args else 0)
        if lr == 0:
            raise ValueError(
                f"{file}: the next step's learning rate is 0 and no peak rate is saved"
            )
        log.warning(
            "%s: the schedule gives step %d a learning rate of 0 (its end); resetting it to the "
            "peak rate %.4g, as the Zero-sum learning authors did",
            *(path, saved_step + 1, lr),
        )
        provenance["learning_rate"] = "the peak rate (the schedule's next rate is 0, its end)"
    return lr, clip, provenance
