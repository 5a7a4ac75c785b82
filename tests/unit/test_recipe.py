import pytest

from imgrade.config import RunConfig
from imgrade.core.errors import ConfigError
from imgrade.pipeline.recipe import parse_recipe, parse_recipes


def test_a_key_is_found_in_whichever_section_holds_it_with_dashes_or_underscores():
    recipe = parse_recipe("regression+head=linear+class-weight=balanced+epochs=2+lr=0.01+objective=accuracy")
    assert recipe.task == "regression" and recipe.tta is False
    assert recipe.overrides == {
        "model.head": "linear",
        "train.class_weight": "balanced",
        "train.epochs": 2,
        "train.lr": 0.01,
        "calibrate.objective": "accuracy",
    }
    cfg = recipe.config(RunConfig.from_dict({"train": {"epochs": 30, "seed": 4}, "model": {"depth": 11}}))
    assert (cfg.model.task, cfg.model.head, cfg.model.depth) == ("regression", "linear", 11)
    assert (cfg.train.class_weight, cfg.train.epochs, cfg.train.lr, cfg.train.seed) == ("balanced", 2, 0.01, 4)
    assert cfg.calibrate.objective == "accuracy"
    assert parse_recipe("classification+class_weight=balanced").overrides == {"train.class_weight": "balanced"}
    assert parse_recipe("corn+train.epochs=3").overrides == {"train.epochs": 3}


def test_values_are_read_as_int_float_bool_or_text_and_checked_by_the_config():
    assert parse_recipe("coral+backbone-lr-scale=1").config(RunConfig()).train.backbone_lr_scale == 1.0
    assert parse_recipe("coral+augment=false").config(RunConfig()).train.augment is False
    with pytest.raises(
        ConfigError, match=r"^recipe 'coral\+epochs=many': config train.epochs must be an integer, got 'many'$"
    ):
        parse_recipe("coral+epochs=many").config(RunConfig())
    with pytest.raises(
        ConfigError, match=r"^recipe 'coral\+head=wide': model.head 'wide' is not auto, reference or linear"
    ):
        parse_recipe("coral+head=wide").config(RunConfig())


def test_flags_tta_and_true_false_fields():
    recipe = parse_recipe("corn+deterministic+tta")
    assert recipe.tta is True and recipe.overrides == {"train.deterministic": True}
    assert recipe.config(RunConfig()).train.deterministic is True
    with pytest.raises(ConfigError, match=r"recipe 'corn\+epochs': 'epochs' needs a value \(epochs=\.\.\.\)"):
        parse_recipe("corn+epochs")


def test_unknown_keys_and_tasks_fail_in_one_line_naming_the_recipe_and_the_closest_key():
    with pytest.raises(ConfigError) as error:
        parse_recipe("corn+class-wieght=balanced")
    assert (
        str(error.value)
        == "recipe 'corn+class-wieght=balanced': unknown key 'class_wieght'; the closest key is 'class_weight'"
    )
    with pytest.raises(ConfigError, match=r"recipe 'corm\+tta' starts with 'corm', not a task: did you mean 'corn'\?"):
        parse_recipe("corm+tta")
    with pytest.raises(ConfigError, match="closest key is 'epochs'"):
        parse_recipe("corn+model.epochs=3")  # a real key in the wrong section
    for text in ("corn+seed=3", "corn+task=coral", "corn+image-size=64"):
        with pytest.raises(ConfigError, match=rf"recipe '{text.replace('+', '.')}'") as error:
            parse_recipe(text)
        assert "\n" not in str(error.value)


def test_a_list_of_recipes_keeps_its_order_drops_repeats_and_names_folders_safely():
    recipes = parse_recipes(" regression , corn+head=linear , regression,coral+init=runs/pre")
    assert [r.name for r in recipes] == ["regression", "corn+head=linear", "coral+init=runs/pre"]
    assert [r.folder for r in recipes] == ["regression", "corn+head=linear", "coral+init=runs_pre"]
    with pytest.raises(ConfigError, match="--recipes is empty"):
        parse_recipes(" , ")
