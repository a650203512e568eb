"""Contrastive alignment: the losses against hand computations, pairs lacking a side, the
distributed gather, retrieval metrics on known rankings, and the config options."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from omnifuse.errors import ConfigError
from omnifuse.interfaces import Batch, Tokens
from omnifuse.metrics import (
    mean_reciprocal_rank,
    median_rank,
    recall_at_k,
    retrieval_metrics,
    retrieval_ranks,
)
from omnifuse.registry import create_task
from omnifuse.tasks import alignment as alignment_module
from omnifuse.tasks.alignment import (
    Alignment,
    ClipLoss,
    SigLipLoss,
    clip_loss,
    gather,
    siglip_loss,
)
from omnifuse.tasks.base import TaskView


def make_task(between: list[str], *, loss: str = "clip", dim: int = 4, **options) -> Alignment:
    spec = create_task("alignment", "align", between=between, loss=loss, embed_dim=dim, **options)
    return spec.build(dim=dim, modalities=["a", "b", "c"])


def batch_of(present: dict[str, list[bool]]) -> Batch:
    n = len(next(iter(present.values())))
    flags = {m: torch.tensor(p) for m, p in present.items()}
    return Batch([str(i) for i in range(n)], {}, {}, flags, {}, {})


def predict(task: Alignment, embeddings: dict[str, torch.Tensor]) -> torch.Tensor:
    # one always-valid token per modality: its masked mean is the embedding itself
    tokens = {
        m: Tokens(e[:, None], torch.ones(len(e), 1, dtype=torch.bool))
        for m, e in embeddings.items()
    }
    view = TaskView(tokens=tokens, batch=None, target_embeddings={}, fuse=None, decode=None)  # type: ignore[arg-type]
    return task(view)


# --- losses against hand computations ------------------------------------------------------------


def ce(logits: list[float], target: int) -> float:
    return -logits[target] + math.log(sum(math.exp(x) for x in logits))


def test_info_nce_matches_a_hand_computation_on_three_samples():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    b = torch.tensor([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]])
    # logits = 2 * a_i . b_j, by hand
    logits = [[1.6, 0.0, 2.0], [1.2, 2.0, 0.0], [1.92, 1.6, 1.2]]
    columns = [[row[j] for row in logits] for j in range(3)]
    expected = sum(ce(logits[i], i) + ce(columns[i], i) for i in range(3)) / 2 / 3
    assert expected == pytest.approx(0.98853353, abs=1e-7)  # the same in NumPy
    assert clip_loss(a, b, torch.tensor(math.log(2.0))).item() == pytest.approx(expected, rel=1e-6)
    module = ClipLoss(temperature=0.5)
    assert module(torch.stack([a, b], 1)).item() == pytest.approx(expected, rel=1e-6)


def test_clip_logit_scale_starts_at_one_over_temperature_and_is_clamped():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # every match is the worse candidate
    # scale clamped at 100 (not 1e4): each cross-entropy is log(1 + e^100) = 100 + e^-100
    module = ClipLoss(temperature=1e-4)
    assert module.logit_scale.item() == pytest.approx(math.log(1e4))
    assert module(torch.stack([a, b], 1)).item() == pytest.approx(100.0, rel=1e-6)


def test_siglip_matches_a_hand_computation():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # similarities [[1, 0.6], [0, 0.8]]; t' = log 10, b = -10: logits 10 s - 10 =
    # [[0, -4], [-10, -2]]; z = +1 on the diagonal, -1 off it
    log_sigmoid = lambda x: -math.log(1 + math.exp(-x))  # noqa: E731
    expected = -(log_sigmoid(0) + log_sigmoid(4) + log_sigmoid(10) + log_sigmoid(-2)) / 2
    assert expected == pytest.approx(1.41913526, abs=1e-7)
    t, bias = torch.tensor(math.log(10.0)), torch.tensor(-10.0)
    assert siglip_loss(a, b, t, bias).item() == pytest.approx(expected, rel=1e-6)
    module = SigLipLoss(temperature=0.1)
    assert module.bias.item() == -10.0
    assert module(torch.stack([a, b], 1)).item() == pytest.approx(expected, rel=1e-6)


def test_fewer_than_two_samples_give_no_loss():
    assert ClipLoss(temperature=0.07)(torch.zeros(1, 2, 4)) is None
    task = make_task(["a", "b"])
    embeddings = {m: torch.randn(3, 4, requires_grad=True) for m in "ab"}
    prediction = predict(task, embeddings)
    loss = task.loss(prediction, batch_of({"a": [True, False, True], "b": [True, True, False]}))
    assert loss.item() == 0.0
    loss.backward()  # connected to the graph
    assert embeddings["a"].grad is not None


# --- several modalities: pairs lacking a side are left out ---------------------------------------


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_each_pair_reads_only_the_samples_having_both_sides(loss: str):
    torch.manual_seed(0)
    task = make_task(["c", "a", "b"], loss=loss)
    assert task.between == ["a", "b", "c"]
    assert task.pairs == [("a", "b"), ("a", "c"), ("b", "c")]
    present = {
        "a": [True, True, True, True, True],
        "b": [True, True, True, True, False],
        "c": [False, True, True, False, True],
    }
    embeddings = {m: torch.randn(5, 4) for m in "abc"}
    prediction = predict(task, embeddings)
    assert prediction.shape == (5, 3, 4)
    assert torch.allclose(prediction.norm(dim=-1), torch.ones(5, 3))

    def pair_loss(x: str, y: str, rows: list[int]) -> torch.Tensor:
        pair = prediction[rows][:, ["abc".index(x), "abc".index(y)]]
        return task.losses[f"{x}:{y}"](pair)

    expected = (
        pair_loss("a", "b", [0, 1, 2, 3])
        + pair_loss("a", "c", [1, 2, 4])
        + pair_loss("b", "c", [1, 2])
    ) / 3
    batch = batch_of(present)
    assert task.loss(prediction, batch).item() == pytest.approx(expected.item(), rel=1e-6)
    assert task.labelled(batch).tolist() == [True, True, True, True, True]
    assert task.evaluation_target(batch).tolist() == [
        [present[m][i] for m in "abc"] for i in range(5)
    ]

    # b-c with a single complete sample does not count: the mean is over the other two pairs
    present["c"] = [False, True, False, False, True]
    expected = (pair_loss("a", "b", [0, 1, 2, 3]) + pair_loss("a", "c", [1, 4])) / 2
    assert task.loss(prediction, batch_of(present)).item() == pytest.approx(
        expected.item(), rel=1e-6
    )


def test_samples_with_one_modality_are_not_labelled():
    task = make_task(["a", "b", "c"])
    batch = batch_of(
        {"a": [True, True, False], "b": [False, True, False], "c": [False, False, True]}
    )
    assert task.labelled(batch).tolist() == [False, True, False]


# --- the two losses learn the same ranking -------------------------------------------------------


def test_siglip_and_info_nce_learn_the_same_ranking():
    torch.manual_seed(0)
    x, y = torch.randn(6, 8), torch.randn(6, 8)  # the pairing is arbitrary: it must be learned
    rankings = {}
    for loss in ("clip", "siglip"):
        torch.manual_seed(1)
        task = make_task(["a", "b"], loss=loss, dim=8)
        before = predict(task, {"a": x, "b": y}).detach()
        optimizer = torch.optim.Adam(task.parameters(), lr=0.05)
        batch = batch_of({"a": [True] * 6, "b": [True] * 6})
        for _ in range(60):
            optimizer.zero_grad()
            task.loss(predict(task, {"a": x, "b": y}), batch).backward()
            optimizer.step()
        after = predict(task, {"a": x, "b": y}).detach()
        assert (retrieval_ranks(before[:, 0], before[:, 1]) > 0).any()  # not solved at the start
        rankings[loss] = (after[:, 0] @ after[:, 1].T).argmax(1).tolist()
    assert rankings["clip"] == rankings["siglip"] == list(range(6))


# --- distributed gather --------------------------------------------------------------------------


def test_a_single_process_gathers_nothing(monkeypatch: pytest.MonkeyPatch):
    x = torch.randn(3, 2, 4)
    called = []
    monkeypatch.setattr(dist, "all_gather", lambda *a, **k: called.append(a))
    assert not dist.is_initialized()
    gathered, offset = gather(x)
    assert gathered is x and offset == 0 and not called


def test_gather_pads_unequal_ranks_and_offsets_labels(monkeypatch: pytest.MonkeyPatch):
    """Rank 1 of 2, holding 2 rows while rank 0 holds 3: the rows are padded for the
    collective, cut back after it, and this rank's rows start at 3."""
    import torch.distributed.nn.functional as dist_nn

    mine, theirs = torch.ones(2, 2, 4), torch.zeros(3, 2, 4)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda *a: 2)
    monkeypatch.setattr(dist, "get_rank", lambda *a: 1)

    def sizes(out: list[torch.Tensor], size: torch.Tensor) -> None:
        out[0].fill_(3)
        out[1].copy_(size)

    def rows(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        assert x.shape == (3, 2, 4)  # padded to the largest rank's rows
        return (theirs, x)

    monkeypatch.setattr(dist, "all_gather", sizes)
    monkeypatch.setattr(dist_nn, "all_gather", rows)
    gathered, offset = gather(mine)
    assert offset == 3
    assert gathered.shape == (5, 2, 4)
    assert torch.equal(gathered, torch.cat([theirs, mine]))


def _distributed_worker(rank: int, folder: str, loss: str, rows: list[list[int]]) -> None:
    torch.set_num_threads(1)  # a forked child must not reuse the parent's OpenMP pool
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/store", rank=rank, world_size=len(rows)
    )
    torch.manual_seed(0)
    pairs = torch.nn.functional.normalize(torch.randn(5, 2, 4), dim=-1)
    module = ClipLoss(temperature=0.5) if loss == "clip" else SigLipLoss(temperature=0.1)
    local = pairs[rows[rank]].clone().requires_grad_(True)
    value = module(local)
    value.backward()
    torch.save(
        {"loss": value.detach(), "grad": local.grad, "scale": module.logit_scale.grad},
        f"{folder}/rank{rank}.pt",
    )
    dist.destroy_process_group()


@pytest.mark.skipif(
    not dist.is_available() or "fork" not in mp.get_all_start_methods(),
    reason="needs torch.distributed (gloo) and fork",
)
@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_two_ranks_reproduce_the_single_process_loss_and_gradients(tmp_path: Path, loss: str):
    """gloo, 2 processes holding 3 and 2 of 5 samples: the mean of the ranks' losses is the
    loss over all 5, and the gradients (as DDP averages them) are the single-process ones."""
    rows = [[0, 1, 2], [3, 4]]
    # fork: the children start in a fraction of a second (spawn re-imports torch in each)
    workers = mp.start_processes(
        _distributed_worker,
        args=(str(tmp_path), loss, rows),
        nprocs=2,
        join=False,
        start_method="fork",
    )
    deadline = time.monotonic() + 60
    while not workers.join(timeout=1):
        if time.monotonic() > deadline:
            for process in workers.processes:
                process.kill()
            pytest.fail("the two ranks did not finish within 60 s")
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    torch.manual_seed(0)
    pairs = torch.nn.functional.normalize(torch.randn(5, 2, 4), dim=-1).requires_grad_(True)
    module = ClipLoss(temperature=0.5) if loss == "clip" else SigLipLoss(temperature=0.1)
    whole = module(pairs)
    whole.backward()
    mean = sum(r["loss"] for r in results) / 2
    assert mean.item() == pytest.approx(whole.item(), rel=1e-5)
    # each rank's gradient of its own rows sums every rank's loss: 2 x that of the mean
    for rank, r in enumerate(results):
        assert torch.allclose(r["grad"], 2 * pairs.grad[rows[rank]], atol=1e-6)
    scale = (results[0]["scale"] + results[1]["scale"]) / 2
    assert scale.item() == pytest.approx(module.logit_scale.grad.item(), rel=1e-5)


# --- retrieval metrics ---------------------------------------------------------------------------


def test_retrieval_metrics_on_known_rankings():
    ranks = torch.tensor([0, 1, 3, 12])  # 0-based ranks of the matches
    metrics = retrieval_metrics(ranks)
    assert metrics["R@1"] == 0.25
    assert metrics["R@5"] == 0.75
    assert metrics["R@10"] == 0.75
    assert metrics["median_rank"] == 3.0  # 1-based ranks 1, 2, 4, 13: between 2 and 4
    assert metrics["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 4 + 1 / 13) / 4)
    assert median_rank(torch.tensor([0, 1, 3])) == 2.0
    assert mean_reciprocal_rank(torch.tensor([0])) == 1.0
    assert all(
        math.isnan(v) for v in retrieval_metrics(torch.tensor([], dtype=torch.long)).values()
    )


def test_ties_rank_the_match_below_its_equals():
    queries = torch.eye(3)
    # query 0 ties with candidate 1 (0.5 = 0.5) -> rank 1; query 1: 0.9 beats all -> 0;
    # query 2: three-way tie at 0.2 -> rank 2
    candidates = torch.tensor([[0.5, 0.0, 0.2], [0.5, 0.9, 0.2], [0.1, 0.3, 0.2]])
    ranks = retrieval_ranks(queries, candidates)
    assert ranks.tolist() == [1, 0, 2]
    assert recall_at_k(ranks, (1, 2)) == {"R@1": pytest.approx(1 / 3), "R@2": pytest.approx(2 / 3)}
    assert median_rank(ranks) == 2.0
    assert mean_reciprocal_rank(ranks) == pytest.approx((1 / 2 + 1 + 1 / 3) / 3)


def test_task_metrics_cover_every_direction_and_skip_absent_sides():
    task = make_task(["a", "b", "c"], dim=3)
    eye = torch.eye(3)
    b = eye.clone()
    b[2] = eye[0]  # sample 2 lacks b: its (meaningless) embedding copies sample 0's
    prediction = torch.stack([eye, b, eye], 1)  # (3, 3, 3)
    present = torch.tensor([[True, True, True], [True, True, True], [True, False, True]])
    metrics = task.metrics(prediction, present)
    directions = ["a_to_b", "a_to_c", "b_to_a", "b_to_c", "c_to_a", "c_to_b"]
    suffixes = ["R@1", "R@5", "R@10", "median_rank", "mrr"]
    assert set(metrics) == {f"{d}_{s}" for d in directions for s in suffixes}
    # with sample 2's b counted, query a0 would tie with it; left out, every query is first
    assert metrics["a_to_b_R@1"] == 1.0 and metrics["c_to_b_mrr"] == 1.0
    assert metrics["b_to_a_median_rank"] == 1.0 and metrics["a_to_c_R@1"] == 1.0
    empty = task.metrics(prediction[:0], present[:0])
    assert math.isnan(empty["a_to_b_R@1"]) and math.isnan(empty["a_to_b_median_rank"])


# --- config --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"between": ["a", "d"]}, "model.tasks.align.between: unknown modality 'd'"),
        ({"between": ["a", "bb"]}, "unknown modality 'bb' (did you mean 'b'?)"),
        ({"between": ["a"]}, "model.tasks.align.between: name two or more different modalities"),
        ({"between": ["a", "a"]}, "name two or more different modalities"),
        ({"between": ["a", "b"], "temperature": 0.0}, "temperature: must be positive"),
    ],
)
def test_option_and_modality_errors_name_the_field(options: dict, message: str):
    with pytest.raises(ConfigError, match=re.escape(message)):
        spec = create_task("alignment", "align", **options)
        problem = spec.unmet(["a", "b", "c"])
        assert problem is not None
        raise ConfigError(f"model.tasks.align.{problem}")


def test_config_checks_between_and_loss(tmp_path: Path):
    from omnifuse.config import parse_config
    from tests.conftest import tiny_config

    data = tiny_config(tmp_path / "m.parquet")
    data["model"]["tasks"]["retrieval"]["between"] = ["image", "txet"]
    with pytest.raises(
        ConfigError, match=r"between: unknown modality 'txet' \(did you mean 'text'"
    ):
        parse_config(data, "c.yaml")
    data["model"]["tasks"]["retrieval"] |= {"between": ["image", "text"], "loss": "sigmoid"}
    with pytest.raises(
        ConfigError, match=r"model\.tasks\.retrieval\.loss: Input should be 'clip' or"
    ):
        parse_config(data, "c.yaml")
    data["model"]["tasks"]["retrieval"] |= {"loss": "clip", "pair": ["image", "text"]}
    with pytest.raises(ConfigError, match=r"model\.tasks\.retrieval\.pair: unknown option"):
        parse_config(data, "c.yaml")
    data["model"]["tasks"]["retrieval"] = {
        "type": "alignment",
        "between": ["image", "text", "audio"],
        "loss": "siglip",
    }
    config = parse_config(data, "c.yaml")
    assert config.model.tasks["retrieval"].options["between"] == ["image", "text", "audio"]
    assert set(config.without_modalities(["image", "text"]).model.tasks) == {"scene", "score"}


def test_losses_are_kept_per_pair_by_name():
    task = make_task(["b", "a", "c"], loss="siglip")
    names = set(dict(task.named_parameters()))
    assert {"losses.a:b.logit_scale", "losses.a:b.bias", "losses.b:c.bias"} <= names
    assert task.losses["a:c"].logit_scale.item() == pytest.approx(math.log(10))
    assert isinstance(alignment_module.LOSSES["clip"][0](temperature=0.07), ClipLoss)
