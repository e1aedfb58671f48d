import pytest
import yaml

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
    assert params.preprocess.image_size % 32 == 0


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
