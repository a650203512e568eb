"""`omnifuse generate`: images from a saved model's image_generation task."""

from __future__ import annotations

import json
from pathlib import Path

import click

from omnifuse.cli.boundary import out_folder
from omnifuse.errors import ConfigError


def _pairs(values: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for value in values:
        column, sep, cell = value.partition("=")
        if not sep or not column:
            raise ConfigError(f"--input {value}: expected COLUMN=VALUE, e.g. --input label=3")
        pairs[column] = cell
    return pairs


@click.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--text", default=None, help="A text for the model's text modality.")
@click.option("--audio", default=None, help="An audio file for the model's audio modality.")
@click.option("--image", default=None, help="An image file for a conditioning image modality.")
@click.option(
    "--input",
    "inputs",
    multiple=True,
    metavar="COLUMN=VALUE",
    help="A cell for any column a conditioning modality reads (repeatable): --input label=3.",
)
@click.option("--n", type=int, default=4, show_default=True, help="Images to generate.")
@click.option("--seed", type=int, default=0, show_default=True, help="The sampling seed.")
@click.option("--temperature", type=float, default=None, help="Default: the task's.")
@click.option("--guidance", type=float, default=None, help="Classifier-free guidance scale.")
@click.option("--steps", type=int, default=None, help="Parallel decoding steps.")
@click.option("--task", default=None, help="The image_generation task (if several).")
@out_folder("Folder for the PNGs and contact_sheet.png.")
@click.option("--json", "as_json", is_flag=True, help="List what was written as JSON.")
def generate(
    directory: Path,
    text: str | None,
    audio: str | None,
    image: str | None,
    inputs: tuple[str, ...],
    n: int,
    seed: int,
    temperature: float | None,
    guidance: float | None,
    steps: int | None,
    task: str | None,
    out: Path,
    as_json: bool,
) -> None:
    """Generate N images with the model saved in DIRECTORY, conditioned on the inputs given
    (none: unconditional); writes OUT/sample-<i>.png and OUT/contact_sheet.png.

    Example: omnifuse generate runs/world-picture --text "a large red circle left of a small
    blue triangle" --n 4 --out pictures
    """
    from omnifuse.eval.imagegen import conditions, contact_sheet, generate_from, write_images
    from omnifuse.model import OmnifuseModel

    by_kind = {k: v for k, v in {"text": text, "audio": audio, "image": image}.items() if v}
    columns = _pairs(inputs)
    model = OmnifuseModel.from_pretrained(directory)
    cells = conditions(model, task=task, by_kind=by_kind, columns=columns)
    images = generate_from(
        model, cells, n=n, task=task, seed=seed, temperature=temperature, guidance=guidance,
        steps=steps,
    )  # fmt: skip
    paths = write_images(images, out)
    sheet = contact_sheet(images, out / "contact_sheet.png")
    if as_json:
        written = {"images": [str(p) for p in paths], "contact_sheet": str(sheet)}
        click.echo(json.dumps(written | {"seed": seed, "conditions": by_kind | columns}))
    else:
        click.echo(f"wrote {len(paths)} images and {sheet.name} to {out}")
