"""`omnifuse generate`: the files it says it writes, and one-line errors for bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner, Result
from PIL import Image

from omnifuse.cli import cli

CAPTION = "a large red circle left of a small blue triangle"


def invoke(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line(result: Result, expected: str) -> None:
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and expected in errors[0], result.output
    assert "Traceback" not in result.output


def test_generate_writes_the_files_it_lists(image_generator: Path, tmp_path: Path):
    out = tmp_path / "pictures"
    result = invoke(
        "generate", image_generator, "--text", CAPTION, "--n", 3, "--out", out, "--json"
    )
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    assert len(written["images"]) == 3 and written["conditions"] == {"text": CAPTION}
    for path in written["images"]:
        assert Image.open(path).size == (32, 32)
    assert Image.open(written["contact_sheet"]).size[0] > 64
    listed = {Path(p).name for p in [*written["images"], written["contact_sheet"]]}
    assert {p.name for p in out.iterdir()} == listed
    again = invoke(
        "generate", image_generator, "--text", CAPTION, "--n", 3, "--out", tmp_path / "b"
    )
    assert again.exit_code == 0 and "wrote 3 images" in again.output
    for path in written["images"]:  # the same seed, the same images
        assert (tmp_path / "b" / Path(path).name).read_bytes() == Path(path).read_bytes()


def test_a_condition_the_model_does_not_read_is_one_line(image_generator: Path, tmp_path: Path):
    out = tmp_path / "o"
    one_line(
        invoke("generate", image_generator, "--audio", "x.wav", "--out", out),
        "--audio: this model has no audio modality to condition on; it conditions on text",
    )
    one_line(
        invoke("generate", image_generator, "--input", "captio=hi", "--out", out),
        "--input captio: no conditioning modality reads column 'captio' (did you mean 'caption'?)",
    )
    one_line(
        invoke("generate", image_generator, "--input", "nothing", "--out", out), "COLUMN=VALUE"
    )
    assert not out.exists()


def test_a_missing_or_damaged_tokenizer_is_one_line(
    image_generator: Path, image_tokenizer: Path, tmp_path: Path
):
    model = tmp_path / "model"
    shutil.copytree(image_generator, model)
    config = json.loads((model / "config.json").read_text())
    config["model"]["tasks"]["picture"]["tokenizer"] = str(tmp_path / "gone")
    (model / "config.json").write_text(json.dumps(config))
    one_line(invoke("generate", model, "--out", tmp_path / "o"), "gone: no such folder")
    tokenizer = tmp_path / "gone"
    shutil.copytree(image_tokenizer, tokenizer)
    (tokenizer / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    one_line(
        invoke("generate", model, "--out", tmp_path / "o"), "model.safetensors is not readable"
    )
