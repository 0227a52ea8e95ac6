"""Shared fixtures: the repository root and tiny random models built from dicts."""

from __future__ import annotations

import os
from pathlib import Path

# no test reaches the network: the hub client reads this when it is first imported
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture
def tiny_neox():
    """A tiny random GPT-NeoX (Pythia's architecture), float32, untied embeddings."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    cfg = GPTNeoXConfig(
        vocab_size=97,
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=32,
        rotary_pct=0.25,
        tie_word_embeddings=False,
    )
    return GPTNeoXForCausalLM(cfg).eval()


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty hub cache that ``huggingface_hub`` uses for this test, offline."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache
