import pytest
import yaml
from helpers import REPO_ROOT

from segflow.config import load_params
from segflow.errors import ConfigError


def write(tmp_path, raw):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_repository_params_are_valid(raw_params, tmp_path):
    params = load_params(write(tmp_path, raw_params))
    assert params.classes.names[0] == "background"
    assert params.unlabeled_value == 0
    assert params.preprocess.image_size == "auto"


def test_unknown_key_names_key_and_allowed_keys(raw_params, tmp_path):
    raw_params["train"]["learning_rate"] = 0.1
    with pytest.raises(ConfigError) as error:
        load_params(write(tmp_path, raw_params))
    message = str(error.value)
    assert "train.learning_rate: unknown key" in message
    assert "'lr'" in message and "'epochs'" in message


def test_bad_value_names_key_and_allowed_values(raw_params, tmp_path):
    raw_params["train"]["loss"] = "hinge"
    raw_params["preprocess"]["image_size"] = 100
    with pytest.raises(ConfigError) as error:
        load_params(write(tmp_path, raw_params))
    message = str(error.value)
    assert "train.loss" in message and "'hinge'" in message and "'dice'" in message
    assert "preprocess.image_size" in message and "multiple of 32" in message


def test_unlabeled_must_be_a_class_or_ignore(raw_params, tmp_path):
    raw_params["rasterize"]["unlabeled"] = "void"
    with pytest.raises(ConfigError, match="rasterize.unlabeled is 'void'; choose 'ignore' or a class"):
        load_params(write(tmp_path, raw_params))
    raw_params["rasterize"]["unlabeled"] = "ignore"
    assert load_params(write(tmp_path, raw_params)).unlabeled_value == 255


def test_label_map_must_target_known_classes(raw_params, tmp_path):
    raw_params["classes"]["label_map"] = {"pedestrian": "human"}
    with pytest.raises(ConfigError, match=r"label_map maps to \['human'\]"):
        load_params(write(tmp_path, raw_params))


def test_broken_yaml_names_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="params.yaml: not valid YAML"):
        load_params(path)


def test_label_map_ignore_null_and_catch_all(raw_params, tmp_path):
    raw_params["classes"]["label_map"] = {"tree": None, "sign": "ignore", "*": "background", "auto": "car"}
    classes = load_params(write(tmp_path, raw_params)).classes
    assert classes.label_map["tree"] == "ignore" and classes.class_of("sign") == "ignore"
    assert classes.class_of("auto") == "car" and classes.class_of("sky") == "sky"
    assert classes.class_of("anything else") == "background"
    raw_params["classes"]["names"] = ["background", "ignore"]
    with pytest.raises(ConfigError, match="'ignore' is reserved"):
        load_params(write(tmp_path, raw_params))


def test_cityscapes_preset_fills_classes(raw_params, tmp_path):
    raw_params["classes"] = {"preset": "cityscapes"}
    raw_params["rasterize"]["unlabeled"] = "ignore"
    params = load_params(write(tmp_path, raw_params))
    assert len(params.classes.names) == 19 and params.classes.class_of("out of roi") == "ignore"
    raw_params["classes"]["names"] = ["a", "b"]
    with pytest.raises(ConfigError, match="preset 'cityscapes' fills names"):
        load_params(write(tmp_path, raw_params))


def test_fetch_source_checks(raw_params, tmp_path):
    raw_params["fetch"].update(source="https://example.org/data.zip", sha256=None)
    with pytest.raises(ConfigError, match="set fetch.sha256"):
        load_params(write(tmp_path, raw_params))
    raw_params["fetch"]["sha256"] = "xyz"
    with pytest.raises(ConfigError, match="64 hexadecimal digits"):
        load_params(write(tmp_path, raw_params))
    raw_params["fetch"]["sha256"] = "AB" * 32
    assert load_params(write(tmp_path, raw_params)).fetch.sha256 == "ab" * 32


def test_fetch_formats_are_the_readers():
    from typing import get_args

    from segflow.config import FetchParams
    from segflow.data.readers import CROWD_CHOICES, FORMATS

    assert get_args(FetchParams.model_fields["format"].annotation) == FORMATS
    assert get_args(FetchParams.model_fields["coco_crowd"].annotation) == CROWD_CHOICES


def test_code_defaults_equal_params_yaml():
    """params.yaml is the one source: a section built from code defaults alone equals it."""

    from segflow.config import load_params

    shipped = load_params(REPO_ROOT / "params.yaml")
    differ = {}
    for name, field in type(shipped).model_fields.items():
        if name == "classes":  # no default: every dataset names its own classes
            continue
        default = field.get_default(call_default_factory=True)
        if default != getattr(shipped, name):
            differ[name] = (default, getattr(shipped, name))
    assert not differ, f"code defaults differ from params.yaml: {differ}"
