"""Models in, compressed models out: one pipeline from what a user brings to the compressed folder.

The modules, in the order the pipeline uses them (each imports only those before it):

* ``io``: read weights safely, tensor by tensor (no torch at import time);
* ``data``: the bundled digits and sentences; ``evaluate``: the functional metrics;
* ``bert``, ``hf``, ``demos``: models from Hugging Face folders and the bundled demos (``DEMOS``);
* ``calibrate``: input statistics of chosen layers; ``allocate``: one global target spread over layers;
* ``subject``: a model (or weights-only file) with its calibration inputs and its metric;
* ``plan``: the layer table and the rules; ``surgery``: TN modules swapped in;
  ``apply``: one weight at a time to a tensor network; ``heal``: the ``HEALINGS``;
* ``folder``: the one writer and reader of the compressed format;
* ``compress``: :func:`compress`, the pipeline every face calls; ``analysis``: sensitivity and
  method comparison; ``spectra``: bond spectra of a model's weights.

Names are resolved lazily, so ``import tnviz.model`` is cheap.

>>> from tnviz.model import compress, open_subject, load_compressed      # doctest: +SKIP
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "io": ("MAX_FILE_BYTES", "EXTENSIONS", "WeightsFile", "Candidate", "open_weights", "candidates",
           "candidate_kind", "save_safetensors", "safe_extract", "sniff", "state_dict_of"),
    "data": ("digits_split", "digits_batches", "sentences"),
    "evaluate": ("digits_accuracy", "embedding_cosine", "output_agreement", "embed", "cosine_vs", "Agreement",
                 "CosineReport"),
    "demos": ("DEMOS", "Demo", "DIGITS_MODELS", "DigitsMLP", "DigitsCNN", "SentenceEncoder", "cache_dir",
              "digits_model", "train_digits", "minilm_dir", "load_minilm", "load_sentence_encoder", "load_demo",
              "mean_pool_normalize"),
    "hf": ("build_hf_model", "load_hf_model"),
    "calibrate": ("InputStats", "collect_input_stats", "chosen_layers", "conv_patches", "kron_factors",
                  "kron_product"),
    "bert": ("Bert",),
    "device": ("resolve_device",),
    "subject": ("Subject", "open_subject", "demo_subject", "hf_subject", "file_subject", "has_architecture"),
    "plan": ("Rule", "Plan", "LayerPlan", "LayerInfo", "make_plan", "layer_table", "truncation_from", "TRUNCATIONS",
             "TARGETS", "METHODS"),
    "apply": ("apply_plan", "compress_weights", "compress_layer", "preview", "calibration_stats", "PLACEMENTS",
              "BOND_SPLITS"),
    "heal": ("heal", "HEALINGS", "heal_layerwise", "heal_distill", "heal_end_to_end", "heal_digits", "HealReport"),
    "folder": ("load_compressed", "load_into", "write_folder", "zip_folder", "CompressedModel", "CompressedLayer"),
    "compress": ("compress", "Compression", "HealOutcome"),
    "analysis": ("sensitivity", "compare_methods"),
    "spectra": ("spectra_file", "model_table", "input_covariances"),
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
