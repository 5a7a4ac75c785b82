import pytest

from imgrade.config import RunConfig, load_config, parse_split
from imgrade.core.errors import ConfigError


def test_defaults_are_the_reference():
    cfg = RunConfig()
    assert (cfg.model.depth, cfg.model.task, cfg.model.head, cfg.model.setting("loss")) == (
        29,
        "regression",
        "auto",
        "mse",
    )
    assert (cfg.calibrate.objective, cfg.calibrate.alpha) == ("qwk", 0.1)
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.l2) == (200, 32, 1e-3, 1e-4)
    assert cfg.data.image_size == 32 and cfg.data.split == "auto"


def test_yaml_then_flags_precedence(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  path: somewhere\ntrain:\n  epochs: 7\n  lr: 0.01\n")
    cfg = load_config(path).with_overrides({"train.epochs": 3, "train.lr": None})
    assert cfg.data.path == "somewhere"
    assert cfg.train.epochs == 3  # the flag wins over the file
    assert cfg.train.lr == 0.01  # an unset flag keeps the file's value


def test_unknown_key_suggests_closest(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  epoch: 7\n")
    with pytest.raises(ConfigError, match=r"unknown key 'epoch'.*did you mean 'epochs'"):
        load_config(path)
    with pytest.raises(ConfigError, match="did you mean 'model'"):
        RunConfig.from_dict({"modle": {}})


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml is not valid YAML"):
        load_config(path)


@pytest.mark.parametrize(
    "section, values, flag",
    [
        ("model", {"depth": 30}, "--depth"),
        ("train", {"epochs": 0}, "--epochs"),
        ("train", {"lr": -1.0}, "--lr"),
        ("data", {"view": "top"}, "--view"),
        ("data", {"split": "0.5,0.5"}, "--split"),
        ("data", {"grades": ["A", "A"]}, "--grades"),
        ("model", {"task": "corl"}, "did you mean 'coral'"),
        ("model", {"head": "big"}, "--head"),
        ("calibrate", {"alpha": 1.5}, "--alpha 1.5 must be between 0 and 1"),
        ("calibrate", {"objective": "f1"}, "--objective"),
        ("train", {"class_weight": "inverse"}, "--class-weight"),
        ("model", {"sord_beta": 0.0}, "--sord-beta"),
        ("model", {"sord_beta": -2.0}, "--sord-beta"),
    ],
)
def test_validation_names_the_flag(section, values, flag):
    with pytest.raises(ConfigError, match=flag):
        RunConfig.from_dict({section: values})


def test_types_are_checked():
    with pytest.raises(ConfigError, match="must be an integer"):
        RunConfig.from_dict({"train": {"epochs": "ten"}})
    assert RunConfig.from_dict({"train": {"lr": 1}}).train.lr == 1.0


def test_grades_from_comma_string():
    assert RunConfig.from_dict({"data": {"grades": "A, B,C"}}).data.grades == ["A", "B", "C"]


def test_parse_split():
    assert parse_split("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    with pytest.raises(ConfigError):
        parse_split("0.8,0.1,0.2")


def test_round_trip_through_dict():
    cfg = RunConfig().with_overrides({"data.path": "p", "train.seed": 4})
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_log_to_is_one_comma_list_in_a_fixed_order():
    def log_to(value):
        return RunConfig.from_dict({"train": {"log_to": value}}).train.log_to

    assert log_to("MLflow, tensorboard") == "tensorboard,mlflow"
    assert log_to(["mlflow", "mlflow"]) == "mlflow"  # a YAML list too
    assert log_to("none") is None and log_to("") is None and log_to(None) is None
    with pytest.raises(ConfigError, match="'wandb' is not tensorboard or mlflow: set --log-to"):
        log_to("tensorboard,wandb")
