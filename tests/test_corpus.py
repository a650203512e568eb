"""The generated corpus of bad and awkward inputs (tests/corpus.py), run through `data
validate`, `train --skip-bad`, `predict` and `eval`: every bad cell a located error, every
awkward one read as its plain reference, every bad manifest one located line; no traceback,
nothing misread."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from omnifuse.cli import cli
from tests.corpus import (
    GOOD_ROWS,
    Case,
    cell_outcomes,
    config,
    manifest_outcomes,
    rows_with_cases,
    write_cells,
    write_manifest,
    write_manifests,
)

Corpus = tuple[Path, list[dict], list[Case]]
OK = {"located error", "accepted"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("corpus") / "cells"
    good, cases = write_cells(root)
    return root, rows_with_cases(good, cases), cases


def invoke(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_the_corpus_covers_every_kind_and_format(corpus: Corpus, tmp_path: Path):
    _, _, cases = corpus
    manifests = write_manifests(tmp_path)
    assert len(cases) * 3 + len(manifests) >= 60  # cells in three formats, and whole files
    columns = {case.column for case in cases}
    assert {"image", "audio", "video", "series", "vector", "temp", "venue", "text"} <= columns
    assert {c.expect for c in cases} == {"error", "accept", "either"}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_every_cell_case_is_a_located_error_or_read_as_its_reference(corpus: Corpus, suffix: str):
    root, rows, cases = corpus
    manifest = write_manifest(rows, root / f"manifest{suffix}")
    wrong = [o for o in cell_outcomes(root, cases, manifest) if o["outcome"] not in OK]
    assert not wrong, "\n".join(json.dumps(o)[:300] for o in wrong)


def test_every_manifest_case_is_one_located_line_or_read_as_written(tmp_path: Path):
    wrong = [o for o in manifest_outcomes(write_manifests(tmp_path)) if o["outcome"] not in OK]
    assert not wrong, "\n".join(json.dumps(o)[:300] for o in wrong)


@pytest.fixture(scope="module")
def trained(corpus: Corpus) -> tuple[Path, Path, list[int]]:
    """`train --skip-bad` on the corpus (Parquet): it trains on the good rows and lists the
    rows it left out, exactly those `data validate` lists."""
    root, rows, _ = corpus
    manifest = write_manifest(rows, root / "train.parquet")
    source = root / "config.yaml"
    source.write_text(yaml.safe_dump(config(manifest)))
    checked = invoke("data", "validate", manifest, "--config", source, "--json")
    assert checked.exit_code == 1  # bad rows
    bad = [row["row"] for row in json.loads(checked.stdout.strip().splitlines()[-1])["bad"]]
    out = root / "run"
    result = invoke("train", source, "--out", out, "--skip-bad")
    assert result.exit_code == 0, result.output
    skipped = [
        json.loads(line)["row"] for line in (out / "skipped_rows.jsonl").read_text().splitlines()
    ]
    assert skipped == bad and bad and min(bad) > GOOD_ROWS
    assert json.loads((out / "metrics.json").read_text())["skipped_rows"] == len(bad)
    return manifest, out, bad


def test_predict_and_eval_refuse_the_bad_rows_in_one_line(trained: tuple[Path, Path, list[int]]):
    manifest, out, bad = trained
    for command in (["predict", out, manifest], ["eval", out, "--data", manifest]):
        result = invoke(*command)
        assert result.exit_code == 1 and "Traceback" not in result.output
        last = result.output.strip().splitlines()[-1]
        assert last.startswith(f"Error: {manifest.name} row {bad[0]} ") and "more bad rows" in last


def test_predict_and_eval_read_the_accepted_rows(
    corpus: Corpus, trained: tuple[Path, Path, list[int]]
):
    root, rows, _ = corpus
    _, out, bad = trained
    accepted = [row for number, row in enumerate(rows) if number + 1 not in bad]
    manifest = write_manifest(accepted, root / "accepted.jsonl")
    predicted = invoke("predict", out, manifest)
    assert predicted.exit_code == 0, predicted.output
    lines = [json.loads(line) for line in predicted.stdout.strip().splitlines()]
    assert [line["id"] for line in lines] == [row["id"] for row in accepted]
    evaluated = invoke("eval", out, "--data", manifest)
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["samples"] == len(accepted)
