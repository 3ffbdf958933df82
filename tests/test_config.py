import pytest

from ovdet.config import load_config
from ovdet.errors import ConfigError


def test_overrides_are_typed_and_applied():
    cfg = load_config(None, ["SOLVER.BASE_LR", "0.5", "INPUT.MIN_SIZE_TRAIN", "[100, 200]"])
    assert cfg.SOLVER.BASE_LR == 0.5
    assert cfg.INPUT.MIN_SIZE_TRAIN == [100, 200]


def test_unknown_key_names_it_and_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"SOLVER\.BASE_LRR.*did you mean SOLVER\.BASE_LR\?"):
        load_config(None, ["SOLVER.BASE_LRR", "0.1"])


def test_unknown_key_in_file_suggests(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("MODEL:\n  OVDET:\n    TEMPERATUR: 20\n")
    with pytest.raises(ConfigError, match=r"MODEL\.OVDET\.TEMPERATUR.*MODEL\.OVDET\.TEMPERATURE"):
        load_config(path)


def test_wrong_type_is_a_config_error():
    with pytest.raises(ConfigError, match="SOLVER.MAX_ITER.*int"):
        load_config(None, ["SOLVER.MAX_ITER", "many"])


def test_missing_file_and_base_chaining(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "base.yaml").write_text("SOLVER:\n  BASE_LR: 0.3\n  MAX_ITER: 7\n")
    (tmp_path / "child.yaml").write_text("_BASE_: base.yaml\nSOLVER:\n  MAX_ITER: 9\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER) == (0.3, 9)


def test_every_shipped_config_loads():
    from tests.conftest import REPO

    for path in (REPO / "configs").glob("*.yaml"):
        load_config(path)
