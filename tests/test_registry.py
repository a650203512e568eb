import pytest

from omnifuse.errors import ConfigError
from omnifuse.registry import (
    Registry,
    create_fusion,
    list_datasets,
    list_encoders,
    list_fusions,
    list_tasks,
)


def test_builtins_are_registered():
    assert {"image_conv", "text_transformer", "audio_conv", "tabular_tokens"} <= set(
        list_encoders()
    )
    assert "perceiver" in list_fusions()
    assert {"classification", "regression", "alignment"} <= set(list_tasks())
    assert "world" in list_datasets()


def test_register_create_and_list():
    registry = Registry("widget")

    @registry.register("square")
    def square(size: int, *, scale: float = 1.0) -> float:
        return size * size * scale

    @registry.register("cube", version=3)
    def cube(size: int) -> int:
        return size**3

    assert registry.names() == ["cube", "square"]
    assert registry.create("square", size=3, scale=2.0) == 18.0
    assert (registry.version("square"), registry.version("cube")) == (1, 3)
    with pytest.raises(ConfigError, match="unknown widget 'sphere'"):
        registry.version("sphere")
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("square")(square)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(
        ConfigError, match=r"unknown fusion 'perciever' \(did you mean 'perceiver'\?\)"
    ):
        create_fusion("perciever", dim=8, modalities=["a"])


def test_validate_checks_option_names_and_types():
    registry = Registry("widget")

    @registry.register("square")
    def square(size: int, *, scale: float = 1.0, label: str = "x") -> float:
        return size * scale

    assert registry.validate("square", {"scale": "2.5"}, "w") == {"scale": 2.5}
    with pytest.raises(
        ConfigError,
        match=r"^w\.scael: unknown option for widget 'square' \(did you mean 'scale'\?\)$",
    ):
        registry.validate("square", {"scael": 2}, "w")
    with pytest.raises(ConfigError, match=r"^w\.scale: Input should be a valid number"):
        registry.validate("square", {"scale": "big"}, "w")
    # injected (positional) parameters are not options
    with pytest.raises(ConfigError, match=r"w\.size: unknown option"):
        registry.validate("square", {"size": 3}, "w")


def test_the_module_example_runs_as_written():
    import doctest

    import omnifuse.registry

    result = doctest.testmod(omnifuse.registry)
    assert result.attempted >= 4 and result.failed == 0


def test_classes_register_with_their_constructor_options():
    registry = Registry("widget")

    @registry.register("box", kinds=("a",))
    class Box:
        def __init__(self, name: str, *, side: int = 1) -> None:
            self.name, self.side = name, side

    assert registry.validate("box", {"side": "3"}, "w") == {"side": 3}
    assert registry.info("box") == {"version": 1, "kinds": ("a",)}
    assert registry.origin("box") == "omnifuse"
    assert registry.create("box", "b", side=2).side == 2
