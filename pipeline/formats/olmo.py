"""OLMo-native checkpoints (the Zero-sum learning suite, ``mirandrom/zsl-checkpoints``).

One branch per checkpoint holds OLMo's own files: ``config.yaml`` (OLMo's ``TrainConfig``),
``model.pt`` (the model's full state dict) and ``optim.pt`` (the optimizer's full state dict,
keyed by parameter name), written by OLMo's unsharded checkpointer; ``train.pt`` (trainer state)
needs unrestricted unpickling and is neither fetched nor read.

The architecture these configs describe (pre-norm blocks, RMSNorm without weights, no biases,
fused q/k/v, SwiGLU with the value half first, full-head rotary embeddings, optionally tied
embeddings, a vocabulary padded to ``embedding_size``) is ``LlamaForCausalLM`` with every norm
weight fixed at 1: ``hf_config`` translates the config and refuses settings outside it,
``build_model`` turns the norm weights into constant buffers (OLMo has no norm parameters, so
they are neither measured nor stepped), ``hf_state_dict`` maps the tensors. ``read_optimizer``
maps ``optim.pt`` onto ``pipeline.optimizer.OptimizerState`` parameter by parameter, with the
learning rate of the *next* step from OLMo's schedule in ``config.yaml``.

Pickles are read with ``torch.load(weights_only=True)`` only; nothing here runs remote code.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.formats import pickles

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

NAME = "olmo"
DESCRIPTION = "OLMo's native files: config.yaml, model.pt and optim.pt (pickles)"
CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.pt"
OPTIM_FILE = "optim.pt"
OPTIMIZER_FILE = OPTIM_FILE
#: What the download rule fetches of an OLMo-native branch, and all that is read of it.
NATIVE_FILES = [CONFIG_FILE, MODEL_FILE, OPTIM_FILE]
#: whether its checkpoints are expected to carry an optimizer state, and whether that state is
#: a pickle (read only with allow_pickle)
OPTIMIZER_EXPECTED = True
OPTIMIZER_PICKLED = True
#: whether every file it reads is a pickle (read only with allow_pickle)
PICKLES_ONLY = True
TRAIN_LOG = None

#: Prefixes that FSDP, activation checkpointing, torch.compile and DDP put into names.
_WRAPPERS = re.compile(r"(_fsdp_wrapped_module|_checkpoint_wrapped_module|_orig_mod)\.|^module\.")


def matches(path: str | os.PathLike) -> bool:
    """Whether a checkpoint directory holds OLMo-native files (``config.yaml`` + ``model.pt``)."""
    path = Path(path)
    return (path / CONFIG_FILE).exists() and (path / MODEL_FILE).exists()


def patterns(allow_pickle: bool = False) -> list[str]:
    return list(NATIVE_FILES)


def problem(path: str | os.PathLike, allow_pickle: bool = False) -> str | None:
    """Why ``path`` is not an OLMo-native checkpoint that can be read, or None."""
    if not allow_pickle:
        return (
            "model.pt and optim.pt are pickles: set allow_pickle: true on this model to read "
            "them (weights_only loading, no code runs)"
        )
    missing = [f for f in NATIVE_FILES if not (Path(path) / f).exists()]
    if missing:
        return f"no {', '.join(missing)}: not an OLMo-native checkpoint, or an incomplete one"
    return None


def linked_files(src: Path) -> list[Path]:
    """Only what is read (train.pt needs unrestricted unpickling)."""
    return [src / f for f in NATIVE_FILES]


def write_config(src: Path, dst: Path) -> None:
    """The ``config.json`` of the transformers counterpart of OLMo's config.yaml."""
    hf_config(read_config(src), str(src / CONFIG_FILE)).save_pretrained(dst)


def weight_files(path: str | os.PathLike) -> list[Path]:
    return [Path(path) / MODEL_FILE]


def has_optimizer(path: str | os.PathLike) -> bool:
    return (Path(path) / OPTIM_FILE).exists()


def read_train_log(path: str | os.PathLike):
    raise ValueError(f"{path}: OLMo-native checkpoints carry no training-loss log here")


def read_config(path: str | os.PathLike) -> dict:
    """OLMo's ``config.yaml`` of a checkpoint directory, as a dict."""
    import yaml

    file = Path(path) / CONFIG_FILE
    try:
        cfg = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"cannot read OLMo config {file}: {err}") from err
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise ValueError(f"{file} has no 'model' section: it is not an OLMo TrainConfig")
    return cfg


#: OLMo model settings and the only values this mapping reproduces exactly.
_REQUIRED = {
    "block_type": ("sequential",),
    "layer_norm_type": ("rms",),
    "layer_norm_with_affine": (False,),
    "attention_layer_norm": (False, None),
    "include_bias": (False,),
    "bias_for_layer_norm": (False, None),
    "activation_type": ("swiglu",),
    "rope": (True,),
    "alibi": (False, None),
    "clip_qkv": (None,),
    "multi_query_attention": (False, None),
    "scale_logits": (False, None),
    "attention_dropout": (0, 0.0, None),
    "residual_dropout": (0, 0.0, None),
    "embedding_dropout": (0, 0.0, None),
}


def hf_config(olmo: dict, where: str = CONFIG_FILE):
    """The ``LlamaConfig`` whose model computes the same function as OLMo's model section.

    Raises a ``ValueError`` naming the setting for configurations it does not reproduce.
    """
    from transformers import LlamaConfig

    m = olmo["model"]
    for key, allowed in _REQUIRED.items():
        value = m.get(key, allowed[0])
        value = value.lower() if isinstance(value, str) else value
        if value not in allowed:
            raise ValueError(
                f"{where}: model.{key} is {m.get(key)!r}; the OLMo-native loader reproduces "
                f"only {allowed[0]!r} (the Zero-sum learning suite's setting)"
            )
    d, heads = int(m["d_model"]), int(m["n_heads"])
    kv = m.get("n_kv_heads") or heads
    hidden = m.get("mlp_hidden_size") or int(m.get("mlp_ratio", 4) * d)
    if hidden % 2:
        raise ValueError(f"{where}: the SwiGLU projection width {hidden} is odd")
    return LlamaConfig(
        vocab_size=int(m.get("embedding_size") or m["vocab_size"]),  # padded rows included
        hidden_size=d,
        intermediate_size=hidden // 2,  # SwiGLU halves the projection
        num_hidden_layers=int(m["n_layers"]),
        num_attention_heads=heads,
        num_key_value_heads=int(kv),
        hidden_act="silu",
        max_position_embeddings=int(m.get("max_sequence_length", 1024)),
        rms_norm_eps=float(m.get("layer_norm_eps", 1e-5)),
        rope_parameters={"rope_type": "default", "rope_theta": float(m.get("rope_theta", 10000))},
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=bool(m.get("weight_tying", True)),
        pad_token_id=None,  # a padding_idx would zero that row's gradient; OLMo's wte has none
        eos_token_id=m.get("eos_token_id"),
        bos_token_id=None,
    )


def build_model(config, dtype=None):
    """A ``LlamaForCausalLM`` of ``config`` whose norm weights are constant ones (buffers, not
    parameters): OLMo's RMSNorm without an affine transform."""
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(config)
    model.get_input_embeddings().padding_idx = None  # OLMo's embedding has no padding row
    for module in model.modules():
        if type(module).__name__ == "LlamaRMSNorm":
            ones = torch.ones_like(module.weight, requires_grad=False)
            del module.weight
            module.register_buffer("weight", ones, persistent=False)
    return model.to(dtype or torch.float32)


def _clean(name: str) -> str:
    return _WRAPPERS.sub("", name)


def tensor_parts(name: str, config) -> list[tuple[str, slice]]:
    """The transformers tensors an OLMo tensor maps to, each with the rows of the OLMo tensor
    (weight or Adam moment, same shape) it takes; a ``KeyError`` for a name the mapping does
    not know."""
    name = _clean(name)
    whole = slice(None)
    if name == "transformer.wte.weight":
        return [("model.embed_tokens.weight", whole)]
    if name == "transformer.ff_out.weight":  # untied output layer
        return [("lm_head.weight", whole)]
    match = re.fullmatch(r"transformer\.blocks\.(\d+)\.(\w+)\.weight", name)
    if not match:
        raise KeyError(name)
    i, part = match.groups()
    pre = f"model.layers.{i}"
    if part == "att_proj":  # rows: query, key, value
        d = config.hidden_size
        kv = config.num_key_value_heads * (d // config.num_attention_heads)
        return [
            (f"{pre}.self_attn.q_proj.weight", slice(0, d)),
            (f"{pre}.self_attn.k_proj.weight", slice(d, d + kv)),
            (f"{pre}.self_attn.v_proj.weight", slice(d + kv, d + 2 * kv)),
        ]
    if part == "attn_out":
        return [(f"{pre}.self_attn.o_proj.weight", whole)]
    if part == "ff_proj":  # SwiGLU: x, gate = chunk(2); silu(gate) * x
        h = config.intermediate_size
        return [
            (f"{pre}.mlp.up_proj.weight", slice(0, h)),
            (f"{pre}.mlp.gate_proj.weight", slice(h, 2 * h)),
        ]
    if part == "ff_out":
        return [(f"{pre}.mlp.down_proj.weight", whole)]
    raise KeyError(name)


def split_tensor(name: str, tensor: torch.Tensor, config) -> dict[str, torch.Tensor]:
    """One OLMo tensor as the transformers tensors it maps to (``tensor_parts``)."""
    return {hf_name: tensor[rows] for hf_name, rows in tensor_parts(name, config)}


def hf_state_dict(native: dict[str, torch.Tensor], config, where: str) -> dict[str, torch.Tensor]:
    """``model.pt``'s tensors under the transformers model's names."""
    out = {}
    for name, tensor in native.items():
        try:
            out.update(split_tensor(name, tensor, config))
        except KeyError:
            raise ValueError(
                f"{where}: tensor {name!r} has no counterpart in the transformers model; the "
                "checkpoint's architecture is not the one its config.yaml describes"
            ) from None
    return out


def _torch_load(file: Path, what: str):
    return pickles.load(file, what, mmap=True)


def load_model(path: str | os.PathLike, dtype=None, allow_pickle: bool = False):
    """The transformers model of an OLMo-native checkpoint directory (``config.json`` written
    by ``link_checkpoint`` beside the OLMo files, weights from ``model.pt``)."""
    import torch
    from transformers import AutoConfig

    path = Path(path)
    config = AutoConfig.from_pretrained(path)
    model = build_model(config, torch.float32)
    state = hf_state_dict(_torch_load(path / MODEL_FILE, "OLMo weights"), config, str(path))
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(state))
    extra = sorted(set(state) - set(params))
    if missing or extra:
        raise ValueError(
            f"{path / MODEL_FILE}: no weights for {missing[:4]}, unexpected {extra[:4]}; the "
            "checkpoint does not match its config.yaml"
        )
    with torch.no_grad():
        for name, p in params.items():
            if state[name].shape != p.shape:
                raise ValueError(
                    f"{path / MODEL_FILE}: {name} has shape {tuple(state[name].shape)}, the config "
                    f"asks for {tuple(p.shape)}"
                )
            p.copy_(state[name])
    return model.to(dtype or torch.float32).eval()


# --- the learning-rate schedule and the optimizer state -------------------------------------


def _max_steps(cfg: dict, where: str) -> int:
    duration = str(cfg.get("max_duration", ""))
    if duration.isdigit():
        return int(duration)
    if duration.endswith("T") and duration[:-1].replace(".", "").replace("e", "").isdigit():
        tokens = float(duration[:-1])
        per_step = int(cfg["global_train_batch_size"]) * int(cfg["model"]["max_sequence_length"])
        return math.ceil(tokens / per_step)
    raise ValueError(f"{where}: max_duration {duration!r} is neither steps nor tokens ('…T')")


def scheduled_lr(cfg: dict, step: int, where: str = CONFIG_FILE) -> float:
    """The learning rate OLMo's trainer sets for optimizer step ``step`` (counted from 1): its
    scheduler's ``get_lr(optimizer.learning_rate, step, max_steps)``, for the schedulers of
    OLMo and of the Zero-sum learning fork (trapezoidal)."""
    peak = float(cfg["optimizer"]["learning_rate"])
    s = cfg.get("scheduler") or {}
    name = s.get("name", "cosine_with_warmup")
    units = s.get("units", "steps")
    max_steps = _max_steps(cfg, where)
    if units == "tokens":
        per_step = int(cfg["global_train_batch_size"]) * int(cfg["model"]["max_sequence_length"])
        step, max_steps = step * per_step, max_steps * per_step
    elif units != "steps":
        raise ValueError(f"{where}: scheduler.units {units!r} is not steps or tokens")
    if name == "constant":
        return peak
    warmup = int(float(s.get("t_warmup", 100)))
    alpha_f = float(s.get("alpha_f", 0.1))
    t_max = int(float(s["t_max"])) if s.get("t_max") is not None else max_steps
    low = s.get("warmup_min_lr")
    low = 0.1 * peak if low is None else float(low)
    eta_min = peak * alpha_f
    if step < warmup:
        return low + (peak - low) * step / warmup
    if name == "inverse_sqrt_with_warmup":
        return peak * math.sqrt(warmup / max(warmup, step))
    if step >= t_max:
        return eta_min
    if name == "cosine_with_warmup":
        return (
            eta_min
            + (peak - eta_min) * (1 + math.cos(math.pi * (step - warmup) / (t_max - warmup))) / 2
        )
    if name == "linear_with_warmup":
        return peak - (peak - eta_min) * (step - warmup) / (t_max - warmup)
    if name == "trapezoidal":
        cooldown = int(float(s["t_cooldown"]))
        if step < cooldown:
            return peak
        return peak - (step - cooldown) * (peak - eta_min) / (t_max - cooldown)
    raise ValueError(
        f"{where}: scheduler {name!r} is not one this loader reproduces (constant, "
        "cosine_with_warmup, linear_with_warmup, inverse_sqrt_with_warmup, trapezoidal)"
    )


def read_optimizer(path: str | os.PathLike, model=None, allow_pickle: bool = True, **_):
    """``optim.pt`` of an OLMo-native checkpoint as the update stage's ``OptimizerState``.

    Moments are split like the weights they belong to; the step count is the state's; betas,
    eps, weight decay (and which parameters have none) and the clipping norm are the parameter
    groups'. The learning rate is the one OLMo's schedule gives the next step, t + 1; the saved
    group learning rate (that of step t) must agree with the schedule. Where the next step's
    rate is 0 (the end of a schedule decaying to 0) it is reset to the peak rate, as the Zero-sum
    learning authors did, and the log says so.
    """
    from transformers import AutoConfig

    from pipeline.optimizer import OptimizerState

    path = Path(path)
    file = path / OPTIM_FILE
    cfg = read_config(path)
    config = AutoConfig.from_pretrained(path)
    raw = _torch_load(file, "OLMo optimizer state")
    if not isinstance(raw, dict) or not {"state", "param_groups"} <= set(raw):
        raise ValueError(f"{file} is not an optimizer state dict (no 'state' and 'param_groups')")
    groups = raw["param_groups"]
    names_of_ids = {}
    for g in groups:
        for pid, pname in zip(g["params"], g.get("param_names", g["params"])):
            names_of_ids[pid] = _clean(str(pname))
    moments, steps = {}, set()
    for key, st in raw["state"].items():
        name = names_of_ids.get(key, key) if not isinstance(key, str) else _clean(key)
        try:
            m = split_tensor(name, st["exp_avg"].float(), config)
            v = split_tensor(name, st["exp_avg_sq"].float(), config)
        except KeyError:
            raise ValueError(
                f"{file}: optimizer state of {name!r}, which the model does not have"
            ) from None
        moments.update({n: (m[n], v[n]) for n in m})
        steps.add(int(st["step"]))
    if len(steps) != 1:
        raise ValueError(f"{file}: parameters were stepped unequally often ({sorted(steps)})")
    step = steps.pop()
    decays = {float(g["weight_decay"]) for g in groups if float(g["weight_decay"]) > 0}
    if len(decays) > 1:
        raise ValueError(f"{file}: parameter groups with different weight decays {decays}")
    no_decay = []
    for g in groups:
        if float(g["weight_decay"]) == 0:
            for pname in g.get("param_names", g["params"]):
                no_decay += [n for n, _ in tensor_parts(str(pname), config)]
    g0 = groups[0]
    if g0.get("max_grad_norm_ratio") is not None:
        raise ValueError(f"{file}: adaptive clipping (max_grad_norm_ratio) is not reproduced")
    for key in ("betas", "eps"):
        if any(g[key] != g0[key] for g in groups):
            raise ValueError(f"{file}: parameter groups differ in {key}")
    saved = float(g0["lr"])
    if step > 0:
        expected = scheduled_lr(cfg, step, str(path / CONFIG_FILE))
        if not math.isclose(saved, expected, rel_tol=1e-6, abs_tol=1e-12):
            raise ValueError(
                f"{file}: the saved learning rate {saved:.6g} of step {step} is not what the "
                f"schedule in {CONFIG_FILE} gives ({expected:.6g}); the files do not belong together"
            )
    lr = scheduled_lr(cfg, step + 1, str(path / CONFIG_FILE))
    if lr == 0:
        peak = float(g0.get("initial_lr") or cfg["optimizer"]["learning_rate"])
        log.warning(
            "%s: the schedule gives step %d a learning rate of 0 (its end); resetting it to the "
            "peak rate %.4g, as the Zero-sum learning authors did",
            path,
            step + 1,
            peak,
        )
        lr = peak
    max_norm = g0.get("max_grad_norm", cfg.get("max_grad_norm"))
    return OptimizerState(
        step=step,
        lr=lr,
        betas=tuple(float(b) for b in g0["betas"]),
        eps=float(g0["eps"]),
        weight_decay=decays.pop() if decays else 0.0,
        moments=moments,
        no_weight_decay=sorted(set(no_decay)),
        max_grad_norm=float(max_norm) if max_norm is not None else None,
        loss_denominator="inputs",  # OLMo's trainer: the summed loss over B·T input ids
    )
