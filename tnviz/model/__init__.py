"""Models in: safe weight loading, bundled demos, calibration statistics and functional evaluation.

``tnviz.model.io`` needs no torch at import time (torch is imported when a state_dict is read);
the other submodules import torch. Names are resolved lazily, so ``import tnviz.model`` is cheap.

>>> from tnviz.model import open_weights, candidates          # doctest: +SKIP
>>> from tnviz.model import load_minilm, embed, collect_input_stats   # doctest: +SKIP
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "io": ("MAX_FILE_BYTES", "EXTENSIONS", "WeightsFile", "Candidate", "open_weights", "candidates",
           "candidate_kind", "save_safetensors", "safe_extract", "sniff", "state_dict_of"),
    "demos": ("DEMOS", "Demo", "DIGITS_MODELS", "DigitsMLP", "DigitsCNN", "SentenceEncoder", "cache_dir",
              "digits_split", "digits_model", "digits_batches", "train_digits", "sentences", "minilm_dir",
              "load_minilm", "load_sentence_encoder", "load_demo", "embed", "cosine_vs", "build_hf_model",
              "mean_pool_normalize"),
    "calibrate": ("InputStats", "collect_input_stats", "chosen_layers", "conv_patches", "kron_factors",
                  "kron_product"),
    "evaluate": ("digits_accuracy", "embedding_cosine", "output_agreement", "Agreement", "CosineReport"),
    "bert": ("Bert",),
    "device": ("resolve_device",),
    "compress": ("compress_file", "load_compressed", "spectra_file", "CompressedModel", "CompressedLayer"),
    "tensorize": ("Rule", "Plan", "make_plan", "apply_plan", "layer_table", "functional", "sensitivity",
                  "export_model", "load_into", "compress_model", "demo_subject", "hf_subject", "TNEmbedding",
                  "Tensorized"),
    "heal": ("heal_layerwise", "heal_distill", "heal_end_to_end", "heal_digits", "HealReport"),
    "allocate": ("Allocation",),  # the function is tnviz.model.allocate.allocate (same name as its module)
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'tnviz.model' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
