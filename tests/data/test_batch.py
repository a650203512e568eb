import torch

from omnifuse.interfaces import Collate, Sample


def sample(i: int, text: list[int] | None, image: bool, label: int | None) -> Sample:
    return Sample(
        id=str(i),
        inputs={
            "text": torch.tensor(text) if text is not None else None,
            "image": torch.full((3, 4, 4), float(i)) if image else None,
        },
        targets={"y": torch.tensor(label) if label is not None else None},
    )


def collate() -> Collate:
    return Collate(
        {"text": torch.tensor([1]), "image": torch.zeros(3, 4, 4)}, {"y": torch.tensor(0)}
    )


def test_collate_pads_and_marks_absent_modalities_and_labels():
    batch = collate()(
        [sample(0, [5, 6, 7], True, 1), sample(1, None, False, None), sample(2, [9], True, 2)]
    )
    assert batch.ids == ["0", "1", "2"]
    assert list(batch.inputs) == ["image", "text"]  # sorted keys
    assert batch.inputs["text"].tolist() == [[5, 6, 7], [0, 0, 0], [9, 0, 0]]
    assert batch.inputs["text"].dtype == torch.long
    assert batch.lengths["text"].tolist() == [3, 0, 1]
    assert batch.present["text"].tolist() == [True, False, True]
    assert batch.present["image"].tolist() == [True, False, True]
    assert batch.inputs["image"].shape == (3, 3, 4, 4)
    assert batch.inputs["image"][1].abs().sum() == 0
    assert batch.targets["y"].tolist() == [1, 0, 2]
    assert batch.labelled["y"].tolist() == [True, False, True]


def test_collate_when_every_sample_lacks_a_modality():
    batch = collate()([sample(0, None, False, 1), sample(1, None, False, 0)])
    assert batch.inputs["text"].shape == (2, 1)  # the template's width
    assert batch.inputs["image"].shape == (2, 3, 4, 4)
    assert not batch.present["text"].any()
    assert batch.lengths["text"].tolist() == [0, 0]


def test_only_keeps_the_named_modalities():
    assert list(sample(0, [1], True, 1).only(["image"]).inputs) == ["image"]
