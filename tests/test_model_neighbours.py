"""The top-k neighbour overlap of sentence embeddings, against a hand count."""
from __future__ import annotations

import math

import pytest
import torch

from tnviz.errors import TnvizError
from tnviz.model.evaluate import neighbour_overlap


def _at(degrees):
    rad = [math.radians(d) for d in degrees]
    return torch.tensor([[math.cos(a), math.sin(a)] for a in rad], dtype=torch.float64)


def test_overlap_matches_a_hand_count():
    # six unit vectors at these angles: cosine order = angular distance order (all within 180 degrees)
    reference = _at([0, 10, 30, 65, 105, 150])
    # 2-nearest by hand: 0:{1,2} 1:{0,2} 2:{1,0} 3:{2,4} 4:{3,5} 5:{4,3}
    moved = _at([0, 10, 80, 65, 105, 150])  # sentence 2 moved from 30 to 80 degrees
    # now: 0:{1,3} 1:{0,3} 2:{3,4} 3:{2,4} 4:{2,3} 5:{4,2}; shared 1+1+0+2+1+1 = 6 of 6 x 2
    assert neighbour_overlap(reference, moved, k=2) == pytest.approx(0.5)
    assert neighbour_overlap(reference, reference, k=2) == 1.0
    scaled = moved * torch.tensor([[3.0], [0.5], [2.0], [1.0], [7.0], [0.1]], dtype=torch.float64)
    assert neighbour_overlap(reference, scaled, k=2) == pytest.approx(0.5)  # cosine: the lengths do not count


def test_minilm_subject_reports_top5_neighbours():
    from tnviz.model.subject import demo_subject

    subject = demo_subject("minilm", "cpu")
    assert subject.measure_original()["top-5 neighbours"] == 1.0


def test_refusals_name_the_value():
    E = torch.randn(6, 3)
    with pytest.raises(TnvizError, match="k=6"):
        neighbour_overlap(E, E, k=6)
    with pytest.raises(TnvizError, match=r"\(6, 3\) and \(5, 3\)"):
        neighbour_overlap(E, E[:5])
