import json
from pathlib import Path

import pytest
import yaml

from omnifuse.config import load_config, parse_config
from omnifuse.errors import ConfigError
from tests.conftest import tiny_config


def test_yaml_and_json_load_the_same_config(tmp_path: Path):
    data = tiny_config(tmp_path / "m.parquet")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "c.json").write_text(json.dumps(data))
    from_yaml = load_config(tmp_path / "c.yaml")
    assert from_yaml == load_config(tmp_path / "c.json")
    assert from_yaml.model.fusion.type == "perceiver"
    assert from_yaml.model.fusion.options == {"latents": 4, "depth": 1}
    assert from_yaml.modalities["text"].max_length == 64


def test_component_shorthand_is_a_type_name(tmp_path: Path):
    data = tiny_config(tmp_path / "m.parquet")
    data["model"]["fusion"] = "perceiver"
    assert parse_config(data).model.fusion.options == {}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["modalities"]["image"].update(kind="imaeg"),
            "modalities.image.kind: unknown modality kind 'imaeg' (did you mean 'image'?)",
        ),
        (
            lambda d: d["modalities"]["image"].update(size="large"),
            "modalities.image.size: Input should be a valid integer",
        ),
        (
            lambda d: d["modalities"]["text"].update(max_lenght=3),
            "modalities.text.max_lenght: unknown field (did you mean 'max_length'?)",
        ),
        (lambda d: d.update(trian={}), "trian: unknown field (did you mean 'train'?)"),
        (
            lambda d: d["train"].update(epochs=0),
            "train.epochs: Input should be greater than or equal to 1",
        ),
        (
            lambda d: d["model"]["fusion"].update(type="perciever"),
            "model.fusion.type: unknown fusion 'perciever' (did you mean 'perceiver'?)",
        ),
        (
            lambda d: d["model"]["fusion"].update(latent=3),
            "model.fusion.latent: unknown option for fusion 'perceiver' (did you mean 'latents'?)",
        ),
        (
            lambda d: d["model"]["fusion"].update(depth="deep"),
            "model.fusion.depth: Input should be a valid integer",
        ),
        (
            lambda d: d["model"]["tasks"]["scene"].pop("target"),
            "model.tasks.scene.target: required by task 'classification'",
        ),
        (
            lambda d: d["model"]["tasks"]["retrieval"].update(between=["image", "video"]),
            "model.tasks.retrieval.between: unknown modality 'video'",
        ),
        (
            lambda d: d["data"].update(dataset={"type": "world"}),
            "data: Value error, set exactly one of 'manifest', 'dataset' and 'shards'",
        ),
        (
            lambda d: d["modalities"]["image"].pop("kind"),
            "modalities.image.kind: required; known: audio, image,",
        ),
        (
            lambda d: d["modalities"].update(image="a picture"),
            "modalities.image: expected a mapping with a 'kind', got str",
        ),
        (lambda d: d.update(modalities=[]), "modalities: Input should be a valid dictionary"),
        (
            lambda d: d["modalities"]["image"].update(encoder={"type": "text_transformer"}),
            "modalities.image.encoder.type: encoder 'text_transformer' reads text, not image; "
            "image encoders: image_conv, image_efficientnet_lite0, image_hf, image_lenet,"
            " image_patch",
        ),
        (
            lambda d: d["modalities"]["image"].update(
                channels=1, encoder={"type": "image_efficientnet_lite0"}
            ),
            "modalities.image.channels: encoder 'image_efficientnet_lite0' needs channels: 3",
        ),
        (
            lambda d: d["modalities"]["audio"].update(encoder={"type": "audio_hf", "path": "x"}),
            "modalities.audio.features: encoder 'audio_hf' needs features: waveform",
        ),
        (
            lambda d: d["modalities"]["text"].update(
                tokenizer="bpe", encoder={"type": "text_minilm"}
            ),
            "modalities.text.tokenizer: encoder 'text_minilm' needs tokenizer: bytes",
        ),
        (
            lambda d: d["model"]["tasks"].update(r={"type": "reconstruction", "modality": "imag"}),
            "model.tasks.r.modality: unknown modality 'imag' (did you mean 'image'?)",
        ),
    ],
)
def test_errors_name_the_field(tmp_path: Path, edit, message: str):
    data = tiny_config(tmp_path / "m.parquet")
    edit(data)
    with pytest.raises(ConfigError) as error:
        parse_config(data, "c.yaml")
    assert str(error.value).startswith(f"c.yaml: {message}")
    assert "\n" not in str(error.value)


def test_unreadable_files_are_config_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid yaml"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(tmp_path / "list.yaml")


def test_without_modalities_drops_tasks_that_need_them(tmp_path: Path):
    data = tiny_config(tmp_path / "m.parquet")
    data["model"]["tasks"]["impute"] = {"type": "reconstruction", "modality": "audio"}
    config = parse_config(data)
    alone = config.without_modalities(["audio"])
    assert list(alone.modalities) == ["audio"]
    # alignment reads image and text; reconstructing audio needs another modality
    assert set(alone.model.tasks) == {"scene", "score"}
    assert set(config.without_modalities(["image"]).model.tasks) == {"scene", "score"}
    assert "impute" in config.without_modalities(["image", "audio"]).model.tasks


def test_without_modalities_refuses_when_no_task_is_left(tmp_path: Path):
    data = tiny_config(tmp_path / "m.parquet")
    data["model"]["tasks"] = {"retrieval": {"type": "alignment", "between": ["image", "text"]}}
    with pytest.raises(ConfigError, match=r"model.tasks: no task runs on audio alone"):
        parse_config(data).without_modalities(["audio"])
