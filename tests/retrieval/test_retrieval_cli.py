"""`omnifuse index ...` and `omnifuse search` in-process: tables, JSON, one-line errors."""

from __future__ import annotations

import json

from click.testing import CliRunner

from omnifuse.cli import cli


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_build_info_search_add_remove(aligned_model, world, tmp_path):
    out = tmp_path / "ix"
    built = invoke("index", "build", aligned_model, "--data", world, "--modality", "image",
                   "--out", out, "--columns", "scene_class,venue", "--set", "exact_below=10",
                   "--set", "approximate=ivf", "--set", "nlist=4")  # fmt: skip
    assert built.exit_code == 0, built.output
    assert "ivf index" in built.output
    info = json.loads(invoke("index", "info", out, "--json").output)
    assert info["kind"] == "ivf" and info["params"]["nlist"] == 4 and "gap" in info
    table = invoke("index", "info", out).output
    assert "centroid_distance" in table and "approximate_vs_exact_at_10" in table
    found = invoke("search", out, "--text", "a red circle", "-k", "3", "--json")
    hits = json.loads(found.output)["hits"]
    assert len(hits) == 3 and {"rank", "id", "score", "file", "metadata"} <= set(hits[0])
    image = world.parent / "images" / "000005.png"
    human = invoke("search", out, "--model", aligned_model, "--image", image, "-k", "2",
                   "--where", "venue=harbour")  # fmt: skip
    assert human.exit_code == 0 and human.output.splitlines()[0].split()[:3] == [
        "rank", "score", "id",
    ]  # fmt: skip
    removed = invoke("index", "remove", out, "--ids", f"{hits[0]['id']},{hits[1]['id']}")
    assert removed.exit_code == 0 and f"{info['size'] - 2} image rows" in removed.output


def test_errors_are_one_line_with_exit_code_1(built, aligned_model, tmp_path):
    cases = [
        (("search", built, "--text", "x", "-k", "0"), "1 to 1000"),
        (("search", built, "--text", ""), "empty"),
        (("search", built, "--text", "x", "--where", "venu=a"), "did you mean 'venue'"),
        (("search", built), "exactly one of --text"),
        (("search", tmp_path / "none", "--text", "x"), "no such folder"),
        (("index", "remove", built, "--ids", "nope"), "no id 'nope'"),
        (
            (
                "index",
                "build",
                aligned_model,
                "--data",
                "x.csv",
                "--modality",
                "image",
                "--out",
                tmp_path / "o",
                "--set",
                "nprob=3",
            ),
            "did you mean 'nprobe'",
        ),
        (
            (
                "index",
                "build",
                aligned_model,
                "--data",
                "x.csv",
                "--modality",
                "sound",
                "--out",
                tmp_path / "o",
            ),
            "no such modality",
        ),
    ]
    for args, words in cases:
        result = invoke(*args)
        assert result.exit_code == 1, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (args, result.output)


def test_every_command_has_an_example():
    for args in (["index", "build"], ["index", "add"], ["index", "remove"], ["index", "info"],
                 ["search"]):  # fmt: skip
        assert "Example: omnifuse" in invoke(*args, "--help").output
