"""Saved optimizer states: the optimizer's state beside a checkpoint, and one step taken from it.

A checkpoint directory that has an optimizer state holds, beside the Hugging Face files:

* ``optimizer.safetensors``: the state tensors per named parameter, ``{name}.{key}`` (float32,
  named as in ``model.named_parameters()``): AdamW's ``exp_avg`` and ``exp_avg_sq``, or
  another optimizer's buffers (``momentum_buffer``, AdEMAMix's ``exp_avg_slow``, …);
* ``optimizer.json``: for AdamW ``{"format": 1, "optimizer": "adamw", "step": t, "lr": …,
  "betas": […], "eps": …, "weight_decay": …, "no_weight_decay": [names], "max_grad_norm":
  null | float, "loss_denominator": "labels" | "inputs", "terms": {…}, "weights_sha256": …}``,
  where ``step`` is the number of steps taken (AdamW's bias correction of the next step uses
  t + 1) and ``lr`` is the learning rate the schedule gives the *next* step; for any other
  optimizer (``write_torch_state``) ``{"format": 1, "optimizer": kind, "step": t, "terms": {…},
  "optimizers": [{"class", "groups": [{settings, "params": [names]}], "scalars"}], …}``. The
  ``terms`` are what training added to the loss and did after each step
  (``pipeline.maths.interventions.LossTerms``).

No pickle. Other checkpoint formats carry their own files (a Trainer's ``optimizer.pt``, OLMo's
``optim.pt``), which their modules in ``pipeline.formats`` map onto the same ``OptimizerState``.
``write_state`` writes a live ``torch.optim.AdamW``'s state; ``read_state`` reads and checks
these files (an ``OptimizerState``, or a ``TorchState`` for other optimizers); ``one_step``
restores model and optimizers from them and returns the update Δθ of one step on a given loss,
with the suite's own semantics (bias correction from the saved step count, the saved learning
rate, decoupled weight decay, gradient clipping where training clipped, the loss terms and
μ-centering where training used them).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

# the file names of this project's own optimizer state, declared with its checkpoint format
from pipeline.formats.transformers import MOMENTS_FILE
from pipeline.formats.transformers import OPTIMIZER_FILE as STATE_FILE
from pipeline.maths.interventions import (
    AdEMAMix,
    CautiousAdamW,
    CoupledAdamW,
    LossTerms,
    center_rows,
)

log = logging.getLogger(__name__)

#: the keys an AdamW ``optimizer.json`` must hold
REQUIRED = ("step", "lr", "betas", "eps", "weight_decay")
FORMAT = 1


@dataclass
class OptimizerState:
    """AdamW's state after ``step`` steps, and the learning rate of the next one."""

    kind = "adamw"  # (not a field) what one step from it takes, as ``TorchState.kind``

    step: int
    lr: float
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    moments: dict[str, tuple[torch.Tensor, torch.Tensor]]  # name -> (exp_avg, exp_avg_sq)
    no_weight_decay: list[str] = field(default_factory=list)
    max_grad_norm: float | None = None
    #: what the training loss's sum over predicted tokens was divided by: "labels" (their
    #: number: the mean, as transformers and the toy training take it) or "inputs" (the number
    #: of input ids, one more per sequence: OLMo's trainer)
    loss_denominator: str = "labels"
    #: where each setting came from, where a format knows more than one source (the update
    #: store's attrs carry it)
    provenance: dict = field(default_factory=dict)
    #: sha256 of the weights the state was saved with (``pipeline.checkpoints.weights_sha256``),
    #: where the format records it (this project's own files do)
    weights_sha256: str | None = None
    #: the loss terms and projection training added to the cross-entropy (interventions)
    terms: LossTerms = field(default_factory=LossTerms)

    def settings(self) -> dict:
        """Everything but the moments, as written to ``optimizer.json``."""
        return {
            "format": FORMAT,
            "optimizer": "adamw",
            "step": int(self.step),
            "lr": float(self.lr),
            "betas": [float(b) for b in self.betas],
            "eps": float(self.eps),
            "weight_decay": float(self.weight_decay),
            "no_weight_decay": sorted(self.no_weight_decay),
            "max_grad_norm": self.max_grad_norm,
            "loss_denominator": self.loss_denominator,
            "terms": dataclasses.asdict(self.terms),
            **({"weights_sha256": self.weights_sha256} if self.weights_sha256 else {}),
        }


def adamw_state(
    opt: torch.optim.AdamW, model: torch.nn.Module, max_grad_norm: float | None = None
) -> OptimizerState:
    """The state of a live single-group ``AdamW`` over ``model``'s parameters."""
    if len(opt.param_groups) != 1:
        raise ValueError("adamw_state handles one parameter group")
    group = opt.param_groups[0]
    moments, steps = {}, set()
    for name, p in model.named_parameters():
        st = opt.state.get(p, {})
        if st:
            moments[name] = (st["exp_avg"].detach().float(), st["exp_avg_sq"].detach().float())
            steps.add(int(st["step"]))
        else:  # before the first step
            zero = torch.zeros_like(p, dtype=torch.float32)
            moments[name] = (zero, zero.clone())
            steps.add(0)
    if len(steps) != 1:
        raise ValueError(f"the parameters were stepped unequally often: {sorted(steps)}")
    return OptimizerState(
        step=steps.pop(),
        lr=float(group["lr"]),
        betas=tuple(group["betas"]),
        eps=group["eps"],
        weight_decay=group["weight_decay"],
        moments=moments,
        max_grad_norm=max_grad_norm,
    )


def write_torch_state(
    optimizers,
    model: torch.nn.Module,
    kind: str,
    step: int,
    directory: str | os.PathLike,
    terms: LossTerms | None = None,
    weights_sha256: str | None = None,
) -> None:
    """Write the state of live optimizers other than a single AdamW (SGD, an intervention's):
    ``optimizer.json`` with ``"optimizer": kind``, ``step`` steps taken, the training's loss
    terms, and each optimizer's class, parameter groups (settings, parameter names) and scalar
    state (its step count), and the sha256 of the weights saved beside it; every state tensor
    as ``{name}.{key}`` in ``optimizer.safetensors``. ``read_state`` reads it back as a
    ``TorchState``."""
    from safetensors.torch import save_file

    names = {id(p): n for n, p in model.named_parameters()}
    tensors, saved = {}, []
    for opt in optimizers:
        groups, scalars = [], {}
        for group in opt.param_groups:
            settings = {k: v for k, v in group.items() if k != "params"}
            groups.append({**settings, "params": [names[id(p)] for p in group["params"]]})
            for p in group["params"]:
                for key, value in opt.state.get(p, {}).items():
                    if value.ndim > 0:
                        tensors[f"{names[id(p)]}.{key}"] = value.detach().float().contiguous()
                    elif scalars.setdefault(key, float(value)) != float(value):
                        raise ValueError(f"the parameters' {key} differ: {type(opt).__name__}")
        saved.append({"class": type(opt).__name__, "groups": groups, "scalars": scalars})
    directory = Path(directory)
    save_file(tensors, directory / MOMENTS_FILE, metadata={"format": str(FORMAT)})
    settings = {
        "format": FORMAT,
        "optimizer": kind,
        "step": int(step),
        "terms": dataclasses.asdict(terms or LossTerms()),
        "optimizers": saved,
        **({"weights_sha256": weights_sha256} if weights_sha256 else {}),
    }
    (directory / STATE_FILE).write_text(json.dumps(settings, indent=1) + "\n")


@dataclass
class TorchState:
    """The saved state of the optimizers a toy model trained with (``write_torch_state``):
    one step from it restores each optimizer exactly (``restore``)."""

    kind: str
    step: int
    optimizers: list[dict]  # {"class", "groups": [{settings, "params": [names]}], "scalars"}
    buffers: dict[str, dict[str, torch.Tensor]]  # parameter name -> state key -> tensor
    terms: LossTerms = field(default_factory=LossTerms)
    weights_sha256: str | None = None
    max_grad_norm: float | None = None
    loss_denominator: str = "labels"
    provenance: dict = field(default_factory=dict)

    @property
    def lr(self) -> float:
        return float(self.optimizers[0]["groups"][0]["lr"])

    def tensors(self):
        for name, buffers in self.buffers.items():
            for key, t in buffers.items():
                yield f"{name}.{key}", t


#: the optimizer classes a ``TorchState`` may name
CLASSES = {
    "SGD": torch.optim.SGD,
    "AdamW": torch.optim.AdamW,
    "Muon": torch.optim.Muon,
    "CoupledAdamW": CoupledAdamW,
    "CautiousAdamW": CautiousAdamW,
    "AdEMAMix": AdEMAMix,
}


def write_state(state: OptimizerState, directory: str | os.PathLike) -> None:
    """Write ``optimizer.safetensors`` and ``optimizer.json`` into ``directory``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    tensors = {}
    for name, (m, v) in state.moments.items():
        tensors[f"{name}.exp_avg"] = m.contiguous()
        tensors[f"{name}.exp_avg_sq"] = v.contiguous()
    save_file(tensors, directory / MOMENTS_FILE, metadata={"format": str(FORMAT)})
    (directory / STATE_FILE).write_text(json.dumps(state.settings(), indent=1) + "\n")


def read_state(checkpoint: str | os.PathLike) -> OptimizerState:
    """Read a checkpoint's optimizer state; a ``ValueError`` names the file and what is wrong."""

    checkpoint = Path(checkpoint)
    path = checkpoint / STATE_FILE
    try:
        s = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: no optimizer state; this checkpoint can only be analysed along the "
            "displacement to the next checkpoint (update.direction: displacement)"
        ) from None
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}); delete the checkpoint and re-run"
        ) from err
    if not isinstance(s, dict):
        raise ValueError(f"{path} is not a JSON object; delete the checkpoint and re-run")
    if s.get("format") != FORMAT or (s.get("optimizer") != "adamw" and "optimizers" not in s):
        raise ValueError(
            f"{path}: format {s.get('format')!r}, optimizer {s.get('optimizer')!r}; "
            f"this version steps format {FORMAT} states only: analyse this model along "
            "the displacement between checkpoints (update.direction: displacement)"
        )
    if s["optimizer"] != "adamw":
        return _read_torch_state(checkpoint, s)
    missing = [k for k in REQUIRED if k not in s]
    if missing:
        raise ValueError(
            f"{path} lacks {', '.join(missing)} (an AdamW state needs {', '.join(REQUIRED)}); "
            "the file is damaged or was not written by this workflow: delete the checkpoint and "
            "re-run its training"
        )
    tensors = _load_tensors(checkpoint)
    names = sorted({k.rsplit(".", 1)[0] for k in tensors})
    moments = {}
    for name in names:
        try:
            moments[name] = (tensors[f"{name}.exp_avg"], tensors[f"{name}.exp_avg_sq"])
        except KeyError as err:
            raise ValueError(f"{checkpoint / MOMENTS_FILE}: {err.args[0]} is missing") from None
    return OptimizerState(
        step=int(s["step"]),
        lr=float(s["lr"]),
        betas=tuple(s["betas"]),
        eps=float(s["eps"]),
        weight_decay=float(s["weight_decay"]),
        moments=moments,
        no_weight_decay=list(s.get("no_weight_decay", [])),
        max_grad_norm=s.get("max_grad_norm"),
        loss_denominator=s.get("loss_denominator", "labels"),
        weights_sha256=s.get("weights_sha256"),
        terms=LossTerms(**s.get("terms", {})),
    )


def _load_tensors(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The state tensors of a checkpoint's ``optimizer.safetensors``; a ``ValueError`` names it."""
    from safetensors.torch import load_file

    try:
        return load_file(checkpoint / MOMENTS_FILE)
    except Exception as err:
        raise ValueError(
            f"cannot read {checkpoint / MOMENTS_FILE}: {err}; delete the checkpoint and re-run"
        ) from err


def _read_torch_state(checkpoint: Path, s: dict) -> TorchState:
    where = checkpoint / STATE_FILE
    unknown = [o.get("class") for o in s["optimizers"] if o.get("class") not in CLASSES]
    if unknown or "step" not in s:
        raise ValueError(
            f"{where}: optimizer classes {unknown} (known: {', '.join(CLASSES)}) or no step; the "
            "file was not written by this workflow: delete the checkpoint and re-run its training"
        )
    tensors = _load_tensors(checkpoint)
    buffers: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        name, buffer = key.rsplit(".", 1)
        buffers.setdefault(name, {})[buffer] = t
    return TorchState(
        kind=s["optimizer"],
        step=int(s["step"]),
        optimizers=s["optimizers"],
        buffers=buffers,
        terms=LossTerms(**s.get("terms", {})),
        weights_sha256=s.get("weights_sha256"),
    )


def check_state(
    state: OptimizerState,
    where: str,
    step: int,
    lr: float | None = None,
    weights_sha256: str | None = None,
) -> None:
    """Raise ``ValueError`` unless ``state`` belongs to the checkpoint it was read from
    (``where``, its optimizer file): its step count is the checkpoint's ``step``, its learning
    rate the schedule's ``lr`` for the next step (where the schedule is known), the weights'
    sha256 the one it records (where it records one), and every moment finite (the second
    non-negative). Each message names the file, both values and the fix."""
    if state.step != step:
        raise ValueError(
            f"{where}: the optimizer state has taken {state.step} steps, but it lies beside the "
            f"checkpoint of step {step}: it belongs to another checkpoint; copy the optimizer "
            "files saved with this checkpoint, or re-save it"
        )
    if lr is not None and not math.isclose(state.lr, lr, rel_tol=1e-6, abs_tol=1e-12):
        raise ValueError(
            f"{where}: learning rate {state.lr:.6g} for step {step + 1}, but the training "
            f"schedule gives {lr:.6g}: the state was saved by another schedule or edited; "
            "re-save the checkpoint, or fix the schedule in the config"
        )
    if state.weights_sha256 and weights_sha256 and state.weights_sha256 != weights_sha256:
        raise ValueError(
            f"{where}: saved with weights of sha256 {state.weights_sha256[:12]}…, but the "
            f"checkpoint's weights hash to {weights_sha256[:12]}…: the state belongs to other "
            "weights; copy the optimizer files saved with these weights, or re-save both"
        )
    tensors = (
        state.tensors()
        if isinstance(state, TorchState)
        else (
            (f"{name}.{key}", t)
            for name, (m, v) in state.moments.items()
            for key, t in (("exp_avg", m), ("exp_avg_sq", v))
        )
    )
    for key, t in tensors:
        if not torch.isfinite(t).all():
            raise ValueError(
                f"{where}: {key} holds non-finite values (NaN or inf): a step from it "
                "would be NaN; the state is damaged, re-save the checkpoint"
            )
        if key.endswith(".exp_avg_sq") and (t < 0).any():
            raise ValueError(
                f"{where}: {key} has negative entries (a second moment cannot be): "
                "the state is damaged; re-save the checkpoint"
            )


def restore(model: torch.nn.Module, state: OptimizerState) -> torch.optim.AdamW:
    """A ``torch.optim.AdamW`` over ``model``'s parameters in exactly the saved state."""
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(state.moments))
    extra = sorted(set(state.moments) - set(params))
    if missing or extra:
        raise ValueError(
            f"the optimizer state does not match the model: no moments for {missing[:5]}, "
            f"moments of unknown parameters {extra[:5]}; it was saved for another model"
        )
    decay = [p for n, p in params.items() if n not in state.no_weight_decay]
    no_decay = [p for n, p in params.items() if n in state.no_weight_decay]
    groups = [{"params": decay, "weight_decay": state.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=state.lr, betas=state.betas, eps=state.eps)
    for name, p in params.items():
        m, v = state.moments[name]
        if m.shape != p.shape:
            raise ValueError(
                f"optimizer state of {name!r} has shape {tuple(m.shape)}, not {tuple(p.shape)}"
            )
        if state.step > 0:
            opt.state[p] = {
                "step": torch.tensor(float(state.step)),
                "exp_avg": m.to(p.device, torch.float32).clone(),
                "exp_avg_sq": v.to(p.device, torch.float32).clone(),
            }
    return opt


def restore_torch(model: torch.nn.Module, state: TorchState) -> list[torch.optim.Optimizer]:
    """The optimizers of a ``TorchState`` over ``model``'s parameters, in exactly the saved
    state (settings per group, every buffer, the step counts)."""
    params = dict(model.named_parameters())
    named = [n for o in state.optimizers for g in o["groups"] for n in g["params"]]
    if sorted(named) != sorted(params):
        missing, extra = sorted(set(params) - set(named)), sorted(set(named) - set(params))
        raise ValueError(
            f"the optimizer state does not match the model: no group for {missing[:5]}, "
            f"groups name unknown parameters {extra[:5]}; it was saved for another model"
        )
    out = []
    for spec in state.optimizers:
        groups = [{**g, "params": [params[n] for n in g["params"]]} for g in spec["groups"]]
        opt = CLASSES[spec["class"]](groups)
        for g in spec["groups"]:
            for n in g["params"]:
                buffers = state.buffers.get(n, {})
                for key, t in buffers.items():
                    if t.shape != params[n].shape:
                        raise ValueError(
                            f"optimizer state {n}.{key} has shape {tuple(t.shape)}, not "
                            f"{tuple(params[n].shape)}"
                        )
                if buffers:
                    p = params[n]
                    opt.state[p] = {k: t.to(p.device, p.dtype).clone() for k, t in buffers.items()}
                    for key, value in spec["scalars"].items():
                        opt.state[p][key] = torch.tensor(value)
        out.append(opt)
    return out


def one_step(
    model: torch.nn.Module, state: OptimizerState | TorchState, backward: Callable[[], None]
) -> dict[str, torch.Tensor]:
    """The update Δθ (per parameter name) of one optimizer step from ``state`` on the gradient
    that ``backward()`` accumulates into ``model``'s parameters (e.g. ``loss.backward()``, or
    one call per micro-batch), then μ-centering where training centred; the model's weights are
    left as they were."""
    params = dict(model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    optimizers = (
        restore_torch(model, state) if isinstance(state, TorchState) else [restore(model, state)]
    )
    model.zero_grad(set_to_none=True)
    backward()
    if state.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), state.max_grad_norm)
    for opt in optimizers:
        opt.step()
    if state.terms.mu_centering:
        center_rows(model.get_output_embeddings().weight)
    delta = {}
    with torch.no_grad():
        for n, p in params.items():
            delta[n] = p.detach() - before[n]
            p.copy_(before[n])
    model.zero_grad(set_to_none=True)
    return delta
