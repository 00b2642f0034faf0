"""The guided lesson's steps: what each one asks, and the check of the user's action.

Pure logic over the engine (``tnviz.mpo``, ``tnviz.max_useful_ranks``, network properties), no
Streamlit: the page (``tnviz_app/views/lesson.py``) draws the widgets and calls a check with
their values; a check returns a :class:`Verdict` whose message says what was right, or which
rule the action broke and with what value.

>>> check_legs("16,16", "16,16", (256, 256)).ok
True
>>> print(check_legs("16,8", "16,16", (256, 256)).message)
The input legs 16 × 8 multiply to 128; fc has 256 inputs: their product must be 256.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import tnviz
from tnviz import TensorNetwork

from .inputs import parse_int_list

#: The lesson's steps, in order: (key, title).  Each one is one action of the user.
STEPS: tuple[tuple[str, str], ...] = (
    ("matrix", "Pick a matrix"),
    ("legs", "Reshape it into legs"),
    ("rank", "Choose a bond rank"),
    ("params", "Count the parameters"),
    ("contract", "Contract it back"),
    ("apply", "Put it in the model"),
)
STEP_KEYS = tuple(k for k, _ in STEPS)
#: Most legs on a side: more cores than this make a lesson's picture unreadable.
MAX_LEGS = 4
#: The compressed model may lose at most this much held-out accuracy (absolute) to pass.
ACCURACY_TOLERANCE = 0.03


@dataclass(frozen=True)
class Verdict:
    """The outcome of one step's check: ``ok`` and a sentence for the user; ``value`` is what
    the step accepted (parsed legs, the rank...) when ``ok``."""

    ok: bool
    message: str
    value: Any = field(default=None, compare=False)


def _fail(message: str) -> Verdict:
    return Verdict(False, message)


def _times(dims: Sequence[int]) -> str:
    return " × ".join(str(d) for d in dims)


# ---------------------------------------------------------------------- 1. the matrix
def check_matrix(choice: str | None, layers: Mapping[str, tuple[int, int]]) -> Verdict:
    """``choice`` must be one of ``layers`` (name -> weight shape ``(out, in)``)."""
    if not choice:
        return _fail("Pick one of the layers first: the lesson compresses the weight matrix you choose.")
    if choice not in layers:
        return _fail(f"{choice!r} is not a layer of the model; choose one of {', '.join(layers)}.")
    out_f, in_f = layers[choice]
    return Verdict(True, f"{choice}'s weight W is a matrix of {out_f} × {in_f}: one tensor with two legs, "
                         f"o = {out_f} (outputs) and i = {in_f} (inputs).", choice)


def matrix_network(name: str, shape: tuple[int, int]) -> TensorNetwork:
    """The weight as one tensor ``W[o, i]`` (Fig. 2 (i)): input leg ``i`` below, output ``o`` above."""
    out_f, in_f = shape
    return TensorNetwork.build([("W", ["i", "o"])], {"i": in_f, "o": out_f}, ["i"], ["o"], name)


# ---------------------------------------------------------------------- 2. the legs
def check_legs(in_text: str, out_text: str, shape: tuple[int, int], layer: str = "fc") -> Verdict:
    """Input and output leg sizes whose products are the weight's features, 2..MAX_LEGS legs a
    side, every leg of size 2 or more.  ``value`` is ``(in_dims, out_dims)``."""
    out_f, in_f = shape
    dims = {}
    for side, text, features in (("input", in_text, in_f), ("output", out_text, out_f)):
        try:
            legs = parse_int_list(text, f"{side} leg sizes")
        except tnviz.TnvizError as exc:
            return _fail(str(exc))
        if len(legs) < 2:
            return _fail(f"The {side} side needs at least 2 legs to split W into several tensors; "
                         f"{text.strip()!r} is {len(legs)} leg.")
        if len(legs) > MAX_LEGS:
            return _fail(f"Use at most {MAX_LEGS} legs a side in this lesson; the {side} side has {len(legs)}.")
        if min(legs) < 2:
            return _fail(f"Every leg needs size 2 or more (a leg of size 1 carries nothing); the {side} legs "
                         f"are {_times(legs)}.")
        if math.prod(legs) != features:
            return _fail(f"The {side} legs {_times(legs)} multiply to {math.prod(legs):,}; {layer} has "
                         f"{features:,} {side}s: their product must be {features:,}.")
        dims[side] = legs
    return Verdict(True, f"W[{out_f}, {in_f}] is now a tensor with {len(dims['input']) + len(dims['output'])} legs: "
                         f"outputs {_times(dims['output'])}, inputs {_times(dims['input'])}. Same numbers, "
                         "only indexed differently.", (dims["input"], dims["output"]))


def reshaped_network(in_dims: Sequence[int], out_dims: Sequence[int]) -> TensorNetwork:
    """The weight reshaped: one tensor ``T`` with one leg per factor (Fig. 2 (vii))."""
    ins = [f"i{k + 1}" for k in range(len(in_dims))]
    outs = [f"o{k + 1}" for k in range(len(out_dims))]
    return TensorNetwork.build([("T", ins + outs)], {**dict(zip(ins, in_dims)), **dict(zip(outs, out_dims))},
                               ins, outs, "W reshaped")


# ---------------------------------------------------------------------- 3. the rank
def mpo_of(in_dims: Sequence[int], out_dims: Sequence[int], rank: int, layer: str = "W") -> TensorNetwork:
    """The MPO the lesson builds: the same call as the Designer's MPO template."""
    return tnviz.mpo(list(in_dims), list(out_dims), ranks=rank, name=f"MPO of {layer}")


def largest_compressing_rank(in_dims: Sequence[int], out_dims: Sequence[int]) -> int:
    """The largest uniform rank whose MPO has fewer parameters than the dense matrix (0: none)."""
    dense = math.prod(in_dims) * math.prod(out_dims)
    lo, hi = 0, dense
    while lo < hi:  # params grow with the rank
        mid = (lo + hi + 1) // 2
        if mpo_of(in_dims, out_dims, mid).params < dense:
            lo = mid
        else:
            hi = mid - 1
    return lo


def check_rank(rank: Any, in_dims: Sequence[int], out_dims: Sequence[int]) -> Verdict:
    """A whole rank of 1 or more, at most every bond's useful maximum, that makes the MPO smaller
    than the dense matrix.  ``value`` is the rank."""
    if rank is None or isinstance(rank, bool) or not float(rank).is_integer() or int(rank) < 1:
        return _fail(f"A bond rank is a whole number of 1 or more; got {rank!r}.")
    rank = int(rank)
    net = mpo_of(in_dims, out_dims, rank)
    useful = tnviz.max_useful_ranks(net)
    over = {b: u for b, u in useful.items() if rank > u}
    if over:
        bond, cap = min(over.items(), key=lambda kv: kv[1])
        return _fail(f"Rank {rank} is more than bond {bond} can use: the legs on either side of it carry at most "
                     f"{cap:,} independent directions, so ranks above {cap:,} only add zeros. Pick {cap:,} or less.")
    if net.params >= net.dense_params:
        best = largest_compressing_rank(in_dims, out_dims)
        return _fail(f"Rank {rank} gives {net.params:,} parameters, not fewer than the dense matrix's "
                     f"{net.dense_params:,}: nothing is compressed. Pick a rank of {best:,} or less.")
    return Verdict(True, f"Rank {rank}: {len(net.tensors)} tensors joined by {len(useful)} bond"
                         f"{'s' if len(useful) != 1 else ''} of size {rank}.", rank)


# ---------------------------------------------------------------------- 4. the parameters
def check_params(answer: Any, net: TensorNetwork) -> Verdict:
    """``answer`` must be the network's parameter count (the sum over tensors of the product of
    their legs' sizes)."""
    if answer is None or isinstance(answer, bool) or not float(answer).is_integer() or int(answer) < 0:
        return _fail(f"Type the number of parameters as a whole number; got {answer!r}.")
    answer = int(answer)
    if answer == net.params:
        return Verdict(True, f"Right: {net.params:,} parameters, {net.dense_params / net.params:,.1f}x fewer than "
                             f"the dense {net.dense_params:,}.", answer)
    first = net.tensors[0]
    legs = ", ".join(f"{i}={net.sizes[i]}" for i in first.indices)
    return _fail(f"{answer:,} is not the count. Each tensor holds the product of its legs' sizes "
                 f"({first.name} has {legs}); add them up over the {len(net.tensors)} tensors.")


# ---------------------------------------------------------------------- 5. the contraction
def check_contract(summed: Sequence[str], net: TensorNetwork) -> Verdict:
    """To rebuild the matrix, sum exactly the bonds (indices two tensors share), no open leg."""
    chosen = list(dict.fromkeys(summed or ()))
    if not chosen:
        return _fail("Pick the index or indices to sum over.")
    open_legs = [i for i in chosen if i in net.inputs or i in net.outputs]
    if open_legs:
        leg = open_legs[0]
        role = "an input" if leg in net.inputs else "an output"
        return _fail(f"{leg} is an open leg ({role} of the matrix): it stays on the result. A contraction sums "
                     "only the legs two tensors share.")
    bonds = list(net.bonds)
    missing = [b for b in bonds if b not in chosen]
    if missing:
        a, b = net.tensors_on(missing[0])
        return _fail(f"{missing[0]} joins {a} and {b} and is not summed: the result would still be "
                     f"{len(missing) + 1} tensors, not one matrix.")
    return Verdict(True, f"Summing {', '.join(bonds)} joins the {len(net.tensors)} tensors into one matrix W̃ of "
                         f"{net.out_features} × {net.in_features}.", tuple(bonds))


# ---------------------------------------------------------------------- 6. the model
def check_accuracy(original: float, compressed: float, tolerance: float = ACCURACY_TOLERANCE) -> Verdict:
    """The model with the compressed layer may lose at most ``tolerance`` of held-out accuracy."""
    drop = original - compressed
    if drop > tolerance:
        return _fail(f"Accuracy {compressed:.1%} is {drop * 100:.1f} points below the original {original:.1%} "
                     f"(at most {tolerance * 100:.0f} allowed): go back to step 3 and raise the rank.")
    return Verdict(True, f"Accuracy {compressed:.1%} against the original {original:.1%} "
                         f"({-drop * 100:+.1f} points).", compressed)


# ---------------------------------------------------------------------- formulas
def _sub(index: str) -> str:
    """``i12`` -> ``i_{12}`` (LaTeX)."""
    head = index.rstrip("0123456789")
    tail = index[len(head):]
    return f"{head}_{{{tail}}}" if tail and head else index


def contraction_latex(net: TensorNetwork, lhs: str = r"\tilde W") -> str:
    """``\\tilde W_{o_1 o_2, i_1 i_2} = \\sum_{b_1} A_{i_1 o_1 b_1} B_{b_1 i_2 o_2}`` for ``net``."""
    outs = " ".join(_sub(i) for i in net.outputs)
    ins = " ".join(_sub(i) for i in net.inputs)
    bonds = ",".join(_sub(b) for b in net.bonds)
    terms = r"\,".join(f"{t.name}_{{{' '.join(_sub(i) for i in t.indices)}}}" for t in net.tensors)
    total = rf"\sum_{{{bonds}}} " if bonds else ""
    return rf"{lhs}_{{{outs},\, {ins}}} = {total}{terms}"


def params_latex(net: TensorNetwork) -> str:
    """The parameter count as a formula over the tensors' legs, with the sizes left to the user."""
    parts = " + ".join(r"\cdot".join(f"|{_sub(i)}|" for i in t.indices) for t in net.tensors)
    return rf"\#\,\text{{params}} = \sum_{{\text{{tensors}}}} \prod_{{\text{{legs}}}} |\ell| = {parts}"
