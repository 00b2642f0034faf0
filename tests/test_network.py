"""The network model: derived structure, JSON round trip, and every validation rule."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tnviz
from tnviz import InvalidNetworkError, TensorNetwork, load_network
from tnviz.testing import template_networks, random_network_params


def _spec(**changes):
    base = {
        "format": "tnviz.network", "version": 1, "name": "tiny",
        "sizes": {"i1": 2, "o1": 3, "b1": 4},
        "tensors": [{"name": "A", "indices": ["i1", "b1"]}, {"name": "B", "indices": ["b1", "o1"]}],
        "inputs": ["i1"], "outputs": ["o1"],
    }
    base.update(changes)
    return base


def test_derived_structure_of_each_kind_of_index():
    net = tnviz.cp([2, 3], [4], rank=5)
    assert net.hyperedges == ("r",)
    assert net.bonds == ()
    assert set(net.open_indices) == {"i1", "i2", "o1"}
    mpo = tnviz.mpo([2, 3], [4, 5], ranks=[6])
    assert mpo.bonds == ("b1",) and mpo.hyperedges == ()
    assert (mpo.in_features, mpo.out_features) == (6, 20)
    assert mpo.params == 2 * 4 * 6 + 6 * 3 * 5
    assert mpo.dense_params == 120


@pytest.mark.parametrize("name,net", template_networks(), ids=lambda v: v if isinstance(v, str) else "")
def test_json_round_trip_is_exact_for_every_template(name, net):
    text = net.to_json()
    back = load_network(text)
    assert back == net
    assert back.to_json() == text
    assert hash(back) == hash(net)


@pytest.mark.parametrize("seed", range(12))
def test_json_round_trip_over_seeded_random_parameters(seed, tmp_path):
    for template, params in random_network_params(seed):
        net = tnviz.build_template(template, **params)
        path = tnviz.save_network(net, tmp_path / "n.json")
        assert load_network(path) == net


def test_layout_survives_round_trip():
    net = tnviz.mpo([2, 2], [2, 2], 2).with_layout({"A": [1.5, -2], "B": (3, 4)})
    assert load_network(net.to_json()).layout == {"A": (1.5, -2), "B": (3, 4)}


BAD = [
    (_spec(sizes={"i1": 2, "o1": 3}), "every index needs a size; index 'b1'"),
    (_spec(sizes={"i1": 2, "o1": 3, "b1": 0}), "positive integers; index 'b1' has size 0"),
    (_spec(sizes={"i1": 2, "o1": 3, "b1": -1}), "index 'b1' has size -1"),
    (_spec(sizes={"i1": 2, "o1": 3, "b1": 2.5}), "index 'b1' has size 2.5"),
    (_spec(sizes={"i1": 2, "o1": 3, "b1": True}), "index 'b1' has size True"),
    (_spec(sizes={"i1": 2, "o1": 3, "b1": 4, "zz": 2}), "'zz' is not"),
    (_spec(inputs=[]), "'i1' on tensor 'A' is neither"),
    (_spec(inputs=["i1", "b1"]), "must be an open index (used by one tensor); 'b1' is used by 2"),
    (_spec(outputs=["o1", "q"]), "'q' is not used by any tensor"),
    (_spec(outputs=["o1", "i1"]), "not both; 'i1' is both"),
    (_spec(inputs=["i1", "i1"]), "'i1' is listed twice"),
    (_spec(tensors=[{"name": "A", "indices": ["i1", "b1"]}, {"name": "A", "indices": ["b1", "o1"]}]),
     "tensor names must be unique; 'A' is used twice"),
    (_spec(tensors=[{"name": "A", "indices": ["i1", "i1"]}, {"name": "B", "indices": ["o1"]}],
           sizes={"i1": 2, "o1": 3}), "'i1' is listed twice on 'A'"),
    (_spec(tensors=[], sizes={}, inputs=[], outputs=[]), "at least one tensor"),
    (_spec(format="other"), "'format' field must be 'tnviz.network'; got 'other'"),
    (_spec(version=2), "'version' field must be 1; got 2"),
    (_spec(extra=1), "unknown field"),
    (_spec(tensors="A"), "'tensors' must be a list"),
    (_spec(tensors=[{"name": "A"}]), "with 'name' and 'indices'"),
    (_spec(layout={"Z": [0, 0]}), "'Z' is not one"),
    (_spec(layout={"A": [0, "x"]}), "finite numbers"),
    (_spec(sizes={"i1": 2, "o1": 3, "b1": 4, "batch": 2},
           tensors=[{"name": "A", "indices": ["i1", "b1", "batch"]}, {"name": "B", "indices": ["b1", "o1"]}],
           inputs=["i1", "batch"]), "reserved"),
]


@pytest.mark.parametrize("spec,message", BAD)
def test_each_validation_rule_names_rule_and_value(spec, message):
    with pytest.raises(InvalidNetworkError, match=None) as info:
        load_network(spec)
    assert message in str(info.value)


def test_the_bad_specs_differ_from_a_good_one():
    # Non-vacuous: the unmodified spec loads.
    assert load_network(_spec()).in_features == 2


@pytest.mark.parametrize("text,message", [
    ("{", "valid JSON"),
    ("[1, 2]", "must be an object"),
    ("", "valid JSON"),
    ("[" * 100000, "JSON"),
])
def test_malformed_json(text, message):
    with pytest.raises(InvalidNetworkError) as info:
        TensorNetwork.from_json(text)
    assert message in str(info.value)


def test_features_must_match_what_the_layer_was_built_for():
    net = tnviz.mpo([4, 4], [2, 8], 2)
    load_network(net.to_json(), in_features=16, out_features=16)
    with pytest.raises(InvalidNetworkError, match=r"in_features=32; \[4, 4\] multiply to 16"):
        load_network(net.to_json(), in_features=32)
    with pytest.raises(InvalidNetworkError, match="out_features=10"):
        net.check_features(out_features=10)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidNetworkError, match="does not"):
        load_network(tmp_path / "nope.json")


def test_with_sizes_revalidates():
    net = tnviz.mpo([4, 4], [4, 4], 2)
    assert net.with_sizes(b1=3).sizes["b1"] == 3
    with pytest.raises(InvalidNetworkError, match="has size 0"):
        net.with_sizes(b1=0)
    assert net.sizes["b1"] == 2  # the original is untouched (frozen value)


def test_equations():
    net = tnviz.mpo([2, 3], [4, 5], 2)
    assert net.layer_equation().startswith("ab")  # batch first, then the inputs
    assert "->" in net.equation()
    assert net.named_equation().startswith("W[o1,o2 | i1,i2] = A[i1,o1,b1]")


# ---------------------------------------------------------------------- fuzzing
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 50) | st.floats(allow_nan=True) | st.text(max_size=4),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["format", "version", "name", "sizes", "tensors", "inputs", "outputs",
                                        "layout", "x"]), json_values, max_size=8))
def test_fuzz_json_objects_raise_only_our_error(data):
    data = {"format": "tnviz.network", "version": 1, **data}
    try:
        load_network(data)
    except InvalidNetworkError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_fuzz_json_text_raises_only_our_error(text):
    try:
        TensorNetwork.from_json(text)
    except InvalidNetworkError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.builds(lambda d: json.dumps(d), json_values))
def test_fuzz_json_documents(text):
    try:
        TensorNetwork.from_json(text)
    except InvalidNetworkError:
        pass


_VALID = {"format": "tnviz.network", "version": 1, "name": "mpo",
          "sizes": {"i1": 2, "i2": 2, "o1": 2, "o2": 2, "b1": 3},
          "tensors": [{"name": "A", "indices": ["i1", "o1", "b1"]}, {"name": "B", "indices": ["b1", "i2", "o2"]}],
          "inputs": ["i1", "i2"], "outputs": ["o1", "o2"], "layout": {"A": [0, 0], "B": [1, 0]}}


def _mutations():
    """A valid network with one part replaced by any JSON value: a field, one list item, one
    tensor's name or indices (where the escapes were: ``"inputs": [[]]`` raised TypeError)."""
    import copy

    def mutate(path, value):
        data = copy.deepcopy(_VALID)
        *parents, last = path
        target = data
        for key in parents:
            target = target[key]
        target[last] = value
        return data

    paths = st.sampled_from([
        ("name",), ("sizes",), ("tensors",), ("inputs",), ("outputs",), ("layout",),
        ("inputs", 0), ("outputs", 1), ("sizes", "b1"), ("tensors", 0), ("tensors", 1, "name"),
        ("tensors", 0, "indices"), ("tensors", 1, "indices", 0), ("layout", "A"), ("layout", "B", 1),
    ])
    return st.builds(mutate, paths, json_values | st.lists(json_values, max_size=3))


@settings(max_examples=400, deadline=None)
@given(_mutations())
def test_fuzz_one_broken_part_of_a_valid_network_raises_only_our_error(data):
    try:
        net = load_network(data)
    except InvalidNetworkError:
        return
    assert load_network(net.to_json()) == net


@pytest.mark.parametrize("role", ["inputs", "outputs"])
@pytest.mark.parametrize("bad", [[[]], [{}], [None], [3], [""], [["i1"]]])
def test_inputs_and_outputs_must_be_index_names(role, bad):
    data = {**_VALID, role: bad}
    with pytest.raises(InvalidNetworkError, match=f"each {role[:-1]} must be an index name"):
        load_network(data)


def test_reachable_tensors_across_or_not_across_a_bond():
    chain = tnviz.mpo([2, 2, 2], [2, 2, 2], 2)
    assert chain.reachable("A") == {"A", "B", "C"}
    assert chain.reachable("A", without="b1") == {"A"}
    assert chain.reachable("C", without="b1") == {"B", "C"}
    ring = tnviz.tensor_ring([2, 2, 2], [2, 2, 2], 2)
    assert ring.reachable("A", without="b1") == {"A", "B", "C"}  # a ring stays connected
