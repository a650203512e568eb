"""Searching an index: by text and by image, exact and approximate, against brute force;
filters; the one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from omnifuse.errors import ConfigError, DataError
from omnifuse.model import OmnifuseModel
from omnifuse.retrieval import Hit, IndexConfig, Query, build_index, open_index, search
from tests.retrieval.conftest import COLUMNS, brute_force, embeddings


def test_exact_text_search_matches_brute_force(exact, model, world):
    found = embeddings(model, world)
    caption_id = next(iter(found["text"]))
    caption = next(r["caption"] for r in _rows(world) if r["id"] == caption_id)
    hits = search(exact, model, Query(text=caption), k=10)
    ids, scores = brute_force(exact, found["text"][caption_id], "text", found["image"], 10)
    assert [h.rank for h in hits] == list(range(1, 11))
    assert np.allclose([h.score for h in hits], scores, atol=1e-4)
    assert [h.id for h in hits][:3] == ids[:3]
    assert all(isinstance(h, Hit) and h.file and h.file.startswith("images/") for h in hits)
    assert all(set(h.metadata) == set(COLUMNS) for h in hits)


def test_image_search_finds_itself_first(exact, model, world):
    hits = search(exact, model, Query(file=world.parent / "images" / "000003.png"), k=3)
    assert hits[0].id == "000003" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert hits[0].file == "images/000003.png"
    assert (exact.root / hits[0].file).is_file()


def test_batched_search_equals_one_at_a_time(exact, model):
    queries = [Query(text="a small red circle"), Query(text="two large squares")]
    batched = search(exact, model, queries, k=5)
    for hits, query in zip(batched, queries, strict=True):
        alone = search(exact, model, query, k=5)
        assert [h.id for h in hits] == [h.id for h in alone]
        assert np.allclose([h.score for h in hits], [h.score for h in alone], atol=1e-5)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_index_agrees_with_exact(aligned_model, world, tmp_path, exact, model, kind):
    config = IndexConfig(exact_below=10, approximate=kind, nlist=4, nprobe=4)
    index = build_index(aligned_model, world, "image", tmp_path / "ix", config=config,
                        columns=COLUMNS, progress=False)  # fmt: skip
    assert index.kind == kind and index.size == exact.size
    recall = index.info()["recall"]["text"]
    assert recall["approximate_vs_exact_at_10"] >= 0.9
    query = Query(text="a large blue triangle")
    assert [h.id for h in search(index, model, query, k=5)] == [
        h.id for h in search(exact, model, query, k=5)
    ]


def test_filters_match_and_equal_brute_force_among_matching(exact, model, world):
    found = embeddings(model, world)
    venue = {r["id"]: r["venue"] for r in _rows(world)}
    hits = search(exact, model, Query(text="a red square"), k=20, where={"venue": "harbour"})
    assert hits and all(h.metadata["venue"] == "harbour" for h in hits)
    text = next(iter(found["text"]))
    caption = next(r["caption"] for r in _rows(world) if r["id"] == text)
    hits = search(exact, model, Query(text=caption), k=5, where={"venue": "market"})
    among = {i: v for i, v in found["image"].items() if venue[i] == "market"}
    ids, scores = brute_force(exact, found["text"][text], "text", among, 5)
    assert np.allclose([h.score for h in hits], scores, atol=1e-4)
    two = search(exact, model, Query(text=caption), k=5, where={"venue": "market", "id": ids[0]})
    assert [h.id for h in two] == [ids[0]]


def test_filters_through_an_approximate_index(aligned_model, world, tmp_path, model):
    config = IndexConfig(kind="ivf", nlist=4, nprobe=1, filter_exact_below=0)
    index = build_index(aligned_model, world, "image", tmp_path / "ix", config=config,
                        columns=COLUMNS, progress=False)  # fmt: skip
    hits = search(index, model, Query(text="one circle"), k=200, where={"scene_class": "3"})
    assert hits and {h.metadata["scene_class"] for h in hits} == {3}


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda i, m: search(i, m, Query(text="x"), where={"venu": "a"}), ConfigError, "venue"),
        (lambda i, m: search(i, m, Query(text="x"), k=0), ConfigError, "k=0"),
        (lambda i, m: search(i, m, Query(text="x"), k=1001), ConfigError, "1 to 1000"),
        (lambda i, m: search(i, m, Query(text="  ")), DataError, "empty"),
        (lambda i, m: search(i, m, Query()), DataError, "exactly one"),
        (lambda i, m: search(i, m, Query(file=Path("no.png"))), DataError, "no.png"),
        (lambda i, m: search(i, m, Query(file=Path("x.csv"))), DataError, "x.csv"),
    ],
)
def test_bad_queries_are_one_line_errors(exact, model, call, error, words):
    with pytest.raises(error) as raised:
        call(exact, model)
    assert words in str(raised.value) and "\n" not in str(raised.value)


def test_another_model_is_a_config_error(exact, aligned_model, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    for name in ("config.json", "model.safetensors"):
        (other / name).write_bytes((aligned_model / name).read_bytes())
    exact.check_model(other)  # an identical copy is the same model
    (other / "config.json").write_text((aligned_model / "config.json").read_text() + "\n")
    with pytest.raises(ConfigError, match="not the model the index was built with"):
        exact.check_model(other)
    changed = OmnifuseModel.from_pretrained(aligned_model)
    next(iter(changed.parameters())).data += 1
    with pytest.raises(ConfigError, match="not the model"):
        search(exact, changed, Query(text="a red circle"))


def test_open_index_errors_name_the_path(tmp_path, built):
    with pytest.raises(DataError, match="nothing"):
        open_index(tmp_path / "nothing")
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "CURRENT").write_text("v000009\n")
    with pytest.raises(DataError, match="damaged index"):
        open_index(tmp_path / "damaged")


def _rows(world):
    import pyarrow.parquet as pq

    return pq.read_table(world).to_pylist()
