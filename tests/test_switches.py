"""The MuSu switches are defined once (musu.core.switches): their defaults are
the paper's, a bad value names the switch, and each has a place in the config."""
from __future__ import annotations

import dataclasses

import pytest

from musu.core.switches import Switches


def test_defaults_are_the_papers():
    s = Switches()
    assert (s.alpha, s.criteria, s.b, s.theta, s.tau_cls, s.tau_ratio, s.hard, s.num_anchors, s.beta) == \
        (pytest.approx(1 / 3), "mutual", 0.1, 4.0, None, 2.0, False, 1, 4.0)
    assert s.assigner() == dict(alpha=1 / 3, criteria="mutual", b=0.1, theta=4.0, tau_cls=None, tau_ratio=2.0,
                                hard=False, bag_iou_over="all")
    # the paper's ambiguous readings (docs/readings.md): the defaults follow the paper's words
    # (Procedure 1's "across G", Eq. 5's "the total loss in an image"; issue 25)
    assert (s.bag_iou_over, s.normalizer) == ("all", "image")
    assert Switches.head_fields() == ("num_anchors", "beta", "normalizer")


@pytest.mark.parametrize("field, value, words", [
    ("alpha", 1.5, "alpha: must lie in [0.0, 1.0]"), ("b", 1.0, "b: must lie in (0.0, 1.0)"),
    ("criteria", "iou", "criteria: must be one of mutual, cls, reg"), ("tau_cls", 0, "tau_cls: must be positive"),
    ("hard", "yes", "hard: expected true or false"), ("num_anchors", 0, "num_anchors: #A must be an integer"),
    ("theta", "four", "theta: expected a number"),
    ("bag_iou_over", "some", "bag_iou_over: must be one of containing, all"),
    ("normalizer", "gpu", "normalizer: must be one of batch, image")])
def test_a_bad_value_names_its_switch(field, value, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]").replace(".", r"\.")):
        Switches(**{field: value})


def test_fractions_are_numbers_and_replace_checks_again():
    assert Switches(alpha="1/3").alpha == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="b:"):
        dataclasses.replace(Switches(), b=0)


def test_every_switch_has_one_place_in_the_config():
    paths = {name: Switches.config_path(name) for name in Switches.names()}
    assert paths["alpha"] == "model.bbox_head.assigner.alpha" and paths["num_anchors"] == "model.bbox_head.num_anchors"
    assert len(set(paths.values())) == len(paths)
