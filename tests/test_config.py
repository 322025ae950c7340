"""Config blocks given as plain dicts: errors name the key path."""
import pytest

from gnn_jepa.config import build_from_options
from gnn_jepa.datamodule import EventDataModule
from gnn_jepa.models.jepa import JEPAPretraining


class Thing:
    def __init__(self, count: int = 1, scale: float = 1.0, flag: bool = False, name: str = "a",
                 limit: int | None = None, seed: int = 0):
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        self.args = (count, scale, flag, name, limit, seed)


def test_build_from_options_passes_values_and_fixed_arguments():
    t = build_from_options(Thing, {"count": 3, "scale": 2, "limit": None}, "x.thing", seed=7)
    assert t.args == (3, 2, False, "a", None, 7)
    assert build_from_options(Thing, None, "x.thing").args == (1, 1.0, False, "a", None, 0)


@pytest.mark.parametrize("options,message", [
    ({"cout": 3}, r"x\.thing: unknown key\(s\) \['cout'\]; known: \['count', 'flag', 'limit', "
                  r"'name', 'scale'\]"),
    ({"seed": 3}, r"x\.thing: unknown key\(s\) \['seed'\]"),  # set by the caller
    ({"count": "four"}, r"x\.thing\.count: expected int, got 'four'"),
    ({"count": 2.5}, r"x\.thing\.count: expected int, got 2\.5"),
    ({"count": True}, r"x\.thing\.count: expected int, got True"),
    ({"scale": "big"}, r"x\.thing\.scale: expected float, got 'big'"),
    ({"flag": "yes"}, r"x\.thing\.flag: expected bool, got 'yes'"),
    ({"count": -1}, r"x\.thing: count must be >= 0, got -1"),
])
def test_build_from_options_names_the_key(options, message):
    with pytest.raises(ValueError, match=message):
        build_from_options(Thing, options, "x.thing", seed=1)


def test_graph_and_masker_blocks_name_their_keys():
    with pytest.raises(ValueError, match=r"data\.graph: unknown key\(s\) \['graph'\]"):
        EventDataModule(graph={"graph": {"kind": "eta_phi", "radius": 0.1}}, cache_dir=None)
    with pytest.raises(ValueError, match=r"data\.graph: BuildGraph: radius must be > 0"):
        EventDataModule(graph={"radius": -1.0}, cache_dir=None)
    with pytest.raises(ValueError, match=r"model\.masker\.num_targets: expected int, got 'four'"):
        JEPAPretraining(masker={"num_targets": "four"})
    with pytest.raises(ValueError, match=r"model\.masker: unknown key\(s\) \['num_target'\]"):
        JEPAPretraining(masker={"num_target": 4})
