"""Text generation: loss, searches, metrics, and the task inside whole models."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from omnifuse.config import parse_config
from omnifuse.eval.report import generation_examples, write_report
from omnifuse.heads.text_decoder import Special, beam_search, greedy, sample
from omnifuse.interfaces import Batch, Collate, Fused, Sample
from omnifuse.metrics import text_metrics
from omnifuse.model import OmnifuseModel
from omnifuse.registry import create_task
from omnifuse.tasks.base import TaskView
from omnifuse.tasks.generation import Codec, Generation
from omnifuse.train.run import Prepared, prepare
from tests.conftest import tiny_config

BYTES = Codec(None).special  # bos 257, eos 258


def make_task(**options: Any) -> Generation:
    spec = create_task("generation", "gen", target="t", **options)
    task = spec.build(dim=16, modalities=["m"])
    assert isinstance(task, Generation)
    return task


def vector_fused(vectors: Tensor) -> Fused:
    """(B, D) vectors as one-token fused results."""
    return Fused(vectors[:, None], torch.ones(len(vectors), 1, dtype=torch.bool), vectors)


def stepper(task: Generation, fused: Fused):
    """The model's `next_logits` for a task reading `fused` (no late fusion)."""
    return lambda prefix, rows: task.step(fused.select(rows), prefix)


# ---------------------------------------------------------------------------- loss, tokens


def test_the_loss_is_cross_entropy_over_labelled_tokens_by_hand():
    task = make_task(max_length=4)
    eos = task.codec.special.eos
    targets = torch.tensor([[5, 6, eos], [7, eos, 0], [8, 9, eos]])
    batch = Batch(["0", "1", "2"], {}, {}, {}, {"gen": targets}, {"gen": torch.tensor([1, 1, 0])})
    batch.labelled["gen"] = batch.labelled["gen"].bool()
    logits = torch.randn(3, 3, task.codec.size)
    # labelled tokens: sample 0's three and sample 1's two; padding and sample 2 do not count
    counted = [(0, 0, 5), (0, 1, 6), (0, 2, eos), (1, 0, 7), (1, 1, eos)]
    by_hand = sum(
        -logits[b, t, y].item() + math.log(logits[b, t].exp().sum().item()) for b, t, y in counted
    ) / len(counted)
    assert task.loss(logits, batch).item() == pytest.approx(by_hand, rel=1e-5)
    batch.labelled["gen"][:] = False
    assert task.loss(logits, batch).item() == 0.0


def test_targets_end_with_the_end_token_and_are_cut_to_max_length():
    task = create_task("generation", "gen", target="t", max_length=4)
    eos = task.codec.special.eos
    assert task.load_target({"t": "ab"}).tolist() == [ord("a") + 1, ord("b") + 1, eos]
    assert task.load_target({"t": "abcdef"}).tolist() == [98, 99, 100, eos]
    assert task.load_target({"t": None}) is None
    assert make_task(max_length=4).describe(torch.tensor([98, 99, eos, 0])) == "ab"


def test_the_collate_pads_token_targets_and_keeps_scalar_ones():
    collate = Collate({}, {"gen": torch.zeros(1, dtype=torch.long), "cls": torch.zeros(())})
    samples = [
        Sample("0", {}, {"gen": torch.tensor([3, 4, 5]), "cls": torch.tensor(1.0)}),
        Sample("1", {}, {"gen": None, "cls": None}),
        Sample("2", {}, {"gen": torch.tensor([6]), "cls": torch.tensor(2.0)}),
    ]
    batch = collate(samples)
    assert batch.targets["gen"].tolist() == [[3, 4, 5], [0, 0, 0], [6, 0, 0]]
    assert batch.labelled["gen"].tolist() == [True, False, True]
    assert batch.targets["cls"].tolist() == [1.0, 0.0, 2.0]
    assert batch.labelled["cls"].tolist() == [True, False, True]


def test_bpe_round_trips_text():
    codec = Codec([("a", "b"), ("ab", "c")])
    ids = codec.encode("abc abd é")
    assert codec.decode([*ids, codec.special.eos, 5]) == "abc abd é"
    assert codec.special.eos == codec.size - 1


# ------------------------------------------------------------------------------- metrics


def test_metrics_on_known_strings():
    same = text_metrics(["a red circle and a blue square"], ["a red circle and a blue square"])
    assert same == {"bleu4": pytest.approx(1.0), "rougeL": 1.0, "exact_match": 1.0}
    # BLEU is case-sensitive (sacrebleu's default); exact match is not
    cased = text_metrics(["a red circle and a blue square"], ["A red circle and a blue square "])
    assert cased["bleu4"] < 1.0 and cased["exact_match"] == 1.0
    # LCS of "a b c d" and "a c d e" is "a c d": precision = recall = 3/4
    scores = text_metrics(["a b c d", "yes"], ["a c d e", " Yes "])
    assert scores["rougeL"] == pytest.approx((0.75 + 1.0) / 2)
    assert scores["exact_match"] == 0.5
    assert text_metrics(["x y z w"], ["a b c d"])["bleu4"] == 0.0


# ------------------------------------------------------------------------------ searches


def table_logits(table: dict[tuple[int, ...], dict[int, float]], vocab: int):
    """next_logits from probabilities per prefix (after the start token); the rest is tiny."""

    def next_logits(prefix: Tensor, rows: Tensor) -> Tensor:
        out = torch.full((len(prefix), vocab), -30.0)
        for i, ids in enumerate(prefix.tolist()):
            for token, p in table.get(tuple(ids[1:]), {}).items():
                out[i, token] = math.log(p)
        return out

    return next_logits


def test_beam_search_finds_the_likelier_text_that_greedy_misses():
    special = Special(bos=1, eos=2)
    # A = 3 is likelier first, but every continuation of it is unlikely; B = 4 then ends surely
    table = {
        (): {3: 0.6, 4: 0.4},
        (3,): {2: 0.3, 5: 0.35, 6: 0.35},
        (3, 5): {2: 1.0},
        (3, 6): {2: 1.0},
        (4,): {2: 0.9, 5: 0.1},
    }
    next_logits = table_logits(table, 8)
    assert greedy(next_logits, 1, special, 5).tolist() == [[3, 5, 2, 0, 0]]
    assert beam_search(next_logits, 1, special, 5, 2).tolist() == [[4, 2, 0, 0, 0]]
    assert beam_search(next_logits, 1, special, 5, 1).tolist() == [[3, 5, 2, 0, 0]]


def test_max_length_is_respected_without_an_end():
    special = Special(bos=1, eos=2)
    next_logits = table_logits({}, 6)  # uniform: the end is as likely as anything

    def never_ends(prefix: Tensor, rows: Tensor) -> Tensor:
        return next_logits(prefix, rows).index_fill(1, torch.tensor([2]), -1e9)

    for out in (
        greedy(never_ends, 3, special, 4),
        beam_search(never_ends, 3, special, 4, 3),
        sample(never_ends, 3, special, 4, 1.0),
    ):
        assert out.shape == (3, 4)
        assert ((out > 2) & (out < 6)).all()  # never padding, the start or the end


class Memoriser(nn.Module):
    """A key embedding (the 'input') and a generation task reading it."""

    def __init__(self, keys: int, **options: Any) -> None:
        super().__init__()
        self.keys = nn.Embedding(keys, 16)
        self.task = make_task(**options)

    def fused(self, keys: Tensor) -> Fused:
        return vector_fused(self.keys(keys))


CAPTIONS = ["a red cat", "two blue dogs", "a red car", "one tree"]


@pytest.fixture(scope="module")
def memoriser() -> Memoriser:
    torch.manual_seed(0)
    model = Memoriser(len(CAPTIONS), max_length=16, depth=1)
    spec = create_task("generation", "gen", target="t", max_length=16)
    targets = [spec.load_target({"t": c}) for c in CAPTIONS]
    collate = Collate({}, {"gen": spec.target_template()})
    batch = collate([Sample(str(i), {}, {"gen": t}) for i, t in enumerate(targets)])
    keys = torch.arange(len(CAPTIONS))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(120):
        logits = model.task(_input(model.fused(keys), batch))
        loss = model.task.loss(logits, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    return model.eval()


def _input(fused: Fused, batch: Batch) -> TaskView:
    """A view of `fused` for a task trained on its own (no encoders, no fusion)."""
    return TaskView(tokens={}, batch=batch, target_embeddings={}, fuse=lambda _: fused, decode=dict)


@torch.no_grad()
def test_beam_search_reproduces_memorised_captions(memoriser: Memoriser):
    task = memoriser.task
    next_logits = stepper(task, memoriser.fused(torch.arange(len(CAPTIONS))))
    task.decoding = "beam"
    beams = task.generate(next_logits, len(CAPTIONS))
    assert beams.shape == (len(CAPTIONS), 16)
    assert [task.describe(ids) for ids in beams] == CAPTIONS
    task.decoding = "greedy"
    assert [task.describe(ids) for ids in task.generate(next_logits, len(CAPTIONS))] == CAPTIONS


@torch.no_grad()
def test_one_beam_is_greedy():
    torch.manual_seed(1)  # an untrained model: long, arbitrary texts
    model = Memoriser(5, max_length=12).eval()
    next_logits = stepper(model.task, model.fused(torch.arange(5)))
    special = model.task.codec.special
    torch.testing.assert_close(
        beam_search(next_logits, 5, special, 12, 1), greedy(next_logits, 5, special, 12)
    )


@torch.no_grad()
def test_sampling_is_reproducible_under_a_seed_and_cold_sampling_is_greedy():
    torch.manual_seed(2)
    model = Memoriser(4, max_length=10).eval()
    next_logits = stepper(model.task, model.fused(torch.arange(4)))
    special = model.task.codec.special
    torch.manual_seed(7)
    first = sample(next_logits, 4, special, 10, 2.0)
    torch.manual_seed(7)
    torch.testing.assert_close(sample(next_logits, 4, special, 10, 2.0), first)
    assert not torch.equal(sample(next_logits, 4, special, 10, 2.0), first)
    torch.testing.assert_close(
        sample(next_logits, 4, special, 10, 1e-4), greedy(next_logits, 4, special, 10)
    )


# --------------------------------------------------------------------- in the whole model

TASKS = {
    "caption": {
        "type": "generation",
        "target": "caption",
        "tokenizer": "bpe",
        "vocab_size": 300,
        "max_length": 12,
        "depth": 1,
        "decoding": "beam",
        "beam_size": 2,
    },
    "answer": {"type": "generation", "target": "answer", "max_length": 6, "depth": 1},
    "scene": {"type": "classification", "target": "scene_class"},
}


@pytest.fixture(scope="module")
def prepared(world: Path) -> Prepared:
    config = tiny_config(world)
    config["model"]["tasks"] = TASKS
    return prepare(parse_config(config), progress=False)


def test_bpe_merges_are_fitted_into_the_config(prepared: Prepared):
    options = prepared.config.model.tasks["caption"].options
    assert options["merges"] and len(options["merges"]) <= 300 - 257
    assert "merges" not in prepared.config.model.tasks["answer"].options or (
        prepared.config.model.tasks["answer"].options["merges"] is None
    )
    model = OmnifuseModel.build(prepared.config)
    task = model.task_dict()["caption"]
    assert isinstance(task, Generation)
    caption = prepared.manifest.rows[prepared.rows["train"][0]]["caption"]
    ids = task.codec.encode(caption)
    assert task.codec.decode(ids) == caption
    assert len(ids) < len(caption.encode())  # the merges shorten the text
    assert len(prepared.config.task_spec("caption").load_target({"caption": caption})) <= 12


@pytest.mark.parametrize(
    "fusion",
    [{"type": "perceiver", "latents": 4, "depth": 1}, {"type": "late"}],
    ids=["perceiver", "late"],
)
def test_generation_in_the_model(prepared: Prepared, fusion: dict[str, Any], tmp_path: Path):
    data = prepared.config.model_dump(mode="json")
    data["model"]["fusion"] = fusion
    torch.manual_seed(0)
    model = OmnifuseModel.build(parse_config(data))
    batch = prepared.collate(prepared.splits["train"][:6])
    batch.present["image"][:3] = False
    for name in batch.present:  # sample 5 has nothing at all
        batch.present[name][5] = False
    losses = model.train().training_forward(batch)
    assert all(torch.isfinite(v).all() for v in losses.values())
    losses["loss"].backward()
    decoder = model.tasks["caption"].decoder  # type: ignore[union-attr]
    assert all(p.grad is not None and p.grad.isfinite().all() for p in decoder.parameters())

    model.eval()
    with torch.no_grad():
        before = model(batch).outputs
        batch.inputs["image"][:3] = torch.randn_like(batch.inputs["image"][:3]) * 50
        after = model(batch).outputs
    assert before["caption"].shape == (6, 12) and before["answer"].shape == (6, 6)
    for name in ("caption", "answer"):
        torch.testing.assert_close(before[name], after[name], rtol=0, atol=0)
        task = model.task_dict()[name]
        assert isinstance(task, Generation)
        assert ((before[name] >= 0) & (before[name] <= task.codec.special.eos)).all()
        assert isinstance(task.describe(before[name][0]), str)
    metrics = model.task_dict()["caption"].metrics(before["caption"], batch.targets["caption"])
    assert all(0 <= v <= 1 for v in metrics.values())

    model.save_pretrained(tmp_path)
    loaded = OmnifuseModel.from_pretrained(tmp_path)
    with torch.no_grad():
        again = loaded(batch).outputs
    for name in ("caption", "answer"):
        torch.testing.assert_close(again[name], after[name], rtol=0, atol=0)


def test_the_report_shows_generated_examples(prepared: Prepared, tmp_path: Path):
    model = OmnifuseModel.build(prepared.config)
    examples = generation_examples(model, prepared.splits["val"], prepared.collate, count=3)
    assert sorted(examples) == ["answer", "caption"]
    assert len(examples["answer"]) == 3
    answers = {str(r["answer"]) for r in prepared.manifest.rows}
    # answers are cut to max_length 6 (the end included): "yellow" reads "yello"
    assert all(any(a.startswith(e["reference"]) for a in answers) for e in examples["answer"])
    assert all(isinstance(e["generated"], str) for e in examples["caption"])
    metrics = {
        "splits": {"train": 1, "val": 1, "test": 0},
        "evaluated_on": "val",
        "train_seconds": 1.0,
        "tasks": {"answer": {"exact_match": 0.0}},
        "examples": examples,
    }
    report = write_report(tmp_path, metrics, []).read_text()
    assert "## Generated examples: caption" in report
    assert "| reference | generated |" in report
