"""Bounded fuzzing of the loaders users feed by hand: configs, vocabularies, annotations, results.

Each loader either loads (and then its result holds its documented invariants) or raises one of
ovdet's own errors (:class:`~ovdet.utils.errors.OvdetError` subclasses), never anything else. The
example counts keep each test to a few seconds; there is no deadline (the machine may be busy).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from yacs.config import CfgNode

from ovdet.clip.text_classifier import Vocabulary
from ovdet.config import get_cfg, load_config, merge_overrides
from ovdet.data.coco import load_coco_detection
from ovdet.evaluation.ground_truth import load_ground_truth
from ovdet.evaluation.results import load_results
from ovdet.utils.errors import ConfigError, DataError, ResultsError, VocabularyError

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,  # the same examples on every run: a failure is reproducible
)

# Any JSON value, including the non-standard NaN / Infinity Python's json writes.
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _or_junk(plausible: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly a plausible value, sometimes any JSON value."""
    return st.one_of(plausible, plausible, JSON_VALUES)


# ------------------------------------------------------------------------------------ configs


def _leaf_keys(node: CfgNode, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        keys.extend(_leaf_keys(v, f"{prefix}{k}.") if isinstance(v, CfgNode) else [prefix + k])
    return keys


LEAF_KEYS = sorted(_leaf_keys(get_cfg()))
NODE_KEYS = sorted({k.rsplit(".", 1)[0] for k in LEAF_KEYS if "." in k})
CONFIG_KEYS = st.one_of(
    st.sampled_from(LEAF_KEYS),
    st.sampled_from(LEAF_KEYS),
    st.sampled_from(NODE_KEYS),
    st.sampled_from(LEAF_KEYS).map(lambda k: k[:-1] + "X"),  # a typo in the last letter
    st.text(min_size=1, max_size=20),
)


def _nest(pairs: list[tuple[str, object]]) -> dict:
    """``[("A.B", 1)]`` -> ``{"A": {"B": 1}}`` (later pairs win where paths clash)."""
    root: dict = {}
    for key, value in pairs:
        node = root
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = value
    return root


CONFIG_DOCS = st.one_of(
    st.lists(st.tuples(CONFIG_KEYS, JSON_VALUES), max_size=5).map(_nest).map(yaml.safe_dump),
    st.text(max_size=80),  # arbitrary text: YAML syntax errors, scalars, lists
    st.dictionaries(st.sampled_from(["_BASE_", "SOLVER"]), JSON_VALUES, max_size=2).map(
        yaml.safe_dump
    ),
)


@FUZZ
@given(doc=CONFIG_DOCS)
def test_config_files_load_or_raise_config_error(doc, tmp_path):
    path = tmp_path / "fuzz.yaml"
    path.write_text(doc, encoding="utf-8")
    try:
        cfg = load_config(path)
    except ConfigError:
        return
    assert cfg.is_frozen()
    default = get_cfg()
    for key in LEAF_KEYS:  # every loaded value has its default's type
        value, ref = cfg, default
        for part in key.split("."):
            value, ref = value[part], ref[part]
        if ref is not None:
            assert isinstance(value, type(ref)), (key, value)


OVERRIDE_VALUES = st.one_of(
    st.text(max_size=20),
    JSON_VALUES.map(repr),  # Python literals, as a shell user would type them
    st.sampled_from(["[[[]]]", "{[]: 1}", "{1, []}", "(1,", "1e999", "-", "True", "None"]),
)


@FUZZ
@given(
    pairs=st.lists(
        st.tuples(st.sampled_from(LEAF_KEYS) | CONFIG_KEYS, OVERRIDE_VALUES), max_size=3
    ),
    odd=st.booleans(),
)
@example(pairs=[("SOLVER.STEPS", "{[]: 1}")], odd=False)  # literal_eval raises TypeError
def test_command_line_overrides_apply_or_raise_config_error(pairs, odd):
    flat = [x for pair in pairs for x in pair] + (["SOLVER.BASE_LR"] if odd else [])
    try:
        merge_overrides(get_cfg(), flat)
    except ConfigError:
        return
    assert not odd


# -------------------------------------------------------------------------------- vocabularies

NAME_TEXT = st.text(
    alphabet=st.characters(codec="utf-8") | st.sampled_from(" ,,#\t\n\ufeff"), max_size=40
)


def _check_vocabulary(vocab: Vocabulary) -> None:
    assert len(vocab.names) >= 1 and len(vocab.synonyms) == len(vocab.names)
    keys = [" ".join(n.lower().split()) for n in vocab.names]
    assert all(n and n == n.strip() for n in vocab.names)
    assert len(set(keys)) == len(keys)


@FUZZ
@given(spec=st.one_of(NAME_TEXT, st.lists(NAME_TEXT, max_size=6)))
def test_vocabulary_strings_and_lists_parse_or_raise_vocabulary_error(spec):
    try:
        vocab = Vocabulary.parse(spec)
    except VocabularyError:
        return
    _check_vocabulary(vocab)
    if isinstance(spec, str) and "," in spec:
        assert list(vocab.names) == [p.strip() for p in spec.split(",")]


@FUZZ
@given(
    content=st.one_of(NAME_TEXT.map(lambda s: s.encode("utf-8")), st.binary(max_size=40)),
    suffix=st.sampled_from([".txt", ".json"]),
)
def test_vocabulary_files_parse_or_raise_vocabulary_error(content, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"classes{suffix}"
        path.write_bytes(content)
        try:
            vocab = Vocabulary.parse(str(path))
        except VocabularyError:
            return
    _check_vocabulary(vocab)


CATEGORY_JSON = st.fixed_dictionaries(
    {
        "categories": _or_junk(
            st.lists(
                _or_junk(
                    st.fixed_dictionaries(
                        {"id": _or_junk(st.integers(0, 3)), "name": _or_junk(NAME_TEXT)},
                        optional={"synonyms": _or_junk(st.lists(_or_junk(NAME_TEXT), max_size=3))},
                    )
                ),
                max_size=4,
            )
        )
    }
)


@FUZZ
@given(data=st.one_of(CATEGORY_JSON, JSON_VALUES))
def test_vocabulary_json_files_parse_or_raise_vocabulary_error(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "categories.json"
        path.write_text(json.dumps(data), encoding="utf-8")
        try:
            vocab = Vocabulary.parse(str(path))
        except VocabularyError:
            return
    _check_vocabulary(vocab)


# --------------------------------------------------------------------------------- annotations

NUMBER = st.integers(-5, 40) | st.floats(-5, 40) | st.sampled_from([float("nan"), float("inf")])
IMAGES = st.lists(
    _or_junk(st.fixed_dictionaries(
        {
            "id": _or_junk(st.integers(0, 3)),
            "file_name": _or_junk(st.sampled_from(["a.png", "missing.png", "", "sub/"])),
            "width": _or_junk(NUMBER),
            "height": _or_junk(NUMBER),
        }
    )),
    max_size=4,
)  # fmt: skip
ANNOTATIONS = st.lists(
    _or_junk(st.fixed_dictionaries(
        {
            "id": _or_junk(st.integers(0, 9)),
            "image_id": _or_junk(st.integers(0, 3)),
            "category_id": _or_junk(st.integers(0, 3)),
            "bbox": _or_junk(st.lists(NUMBER, min_size=3, max_size=5)),
        },
        optional={"iscrowd": _or_junk(st.sampled_from([0, 1]))},
    )),
    max_size=6,
)  # fmt: skip
CATEGORIES = st.lists(
    _or_junk(st.fixed_dictionaries(
        {"id": _or_junk(st.integers(0, 3)), "name": _or_junk(st.sampled_from(["cat", "dog", "x"]))}
    )),
    max_size=3,
)  # fmt: skip
DATASETS = st.one_of(
    st.fixed_dictionaries(
        {
            "images": _or_junk(IMAGES),
            "annotations": _or_junk(ANNOTATIONS),
            "categories": _or_junk(CATEGORIES),
        }
    ),
    JSON_VALUES,
)


@FUZZ
@given(data=DATASETS, filter_empty=st.booleans(), with_split=st.booleans())
def test_training_annotations_load_or_raise_data_error(data, filter_empty, with_split, tmp_path):
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    split = None
    if with_split:
        split = tmp_path / "split.json"
        split.write_text(json.dumps({"base": ["cat", "x"], "novel": ["dog"]}))
    try:
        records = load_coco_detection(
            path, tmp_path, split=str(split) if split else None, filter_empty=filter_empty
        )
    except DataError:
        return
    num_classes = len(records.class_names)
    for rec in records.images:
        assert rec.path.is_file()
        assert rec.boxes.shape == (len(rec.labels), 4)
        if len(rec.labels):
            assert ((rec.labels >= 1) & (rec.labels <= num_classes)).all()
            x1, y1, x2, y2 = rec.boxes.T
            assert (x2 - x1 >= 1).all() and (y2 - y1 >= 1).all()  # degenerate boxes dropped
            assert (x1 >= 0).all() and (y1 >= 0).all()  # clipped to the image
            assert (x2 <= rec.width).all() and (y2 <= rec.height).all()


@FUZZ
@given(data=DATASETS)
def test_evaluation_ground_truth_loads_or_raises_data_error(data):
    try:
        load_ground_truth(json.loads(json.dumps(data)))
    except DataError:
        return


GROUND_TRUTH = {
    "images": [{"id": 1, "file_name": "1.jpg", "width": 50, "height": 50}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 2, 10, 10]}],
    "categories": [{"id": 2, "name": "cat"}],
}
DETECTIONS = st.lists(
    _or_junk(st.fixed_dictionaries(
        {
            "image_id": _or_junk(st.integers(0, 2)),
            "category_id": _or_junk(st.integers(1, 3)),
            "bbox": _or_junk(st.lists(NUMBER, min_size=3, max_size=5)),
            "score": _or_junk(st.floats(allow_nan=True, allow_infinity=True)),
        }
    )),
    max_size=5,
)  # fmt: skip


@FUZZ
@given(results=st.one_of(DETECTIONS, JSON_VALUES))
def test_results_load_or_raise_results_error(results):
    try:
        checked = load_results(json.loads(json.dumps(results)), GROUND_TRUTH)
    except (ResultsError, DataError):
        return
    for det in checked:
        assert det["image_id"] == 1 and det["category_id"] == 2
        assert len(det["bbox"]) == 4 and det["bbox"][2] >= 0 and det["bbox"][3] >= 0
