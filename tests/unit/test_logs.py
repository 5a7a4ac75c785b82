"""Logging set-up: one stderr handler, -q/-v levels, quiet ranks under torchrun."""

import logging

import pytest

from imgrade.cli import main
from imgrade.core.logs import LOGGER, StderrHandler, setup_logging


@pytest.fixture(autouse=True)
def _restore_logger(monkeypatch):
    logger = logging.getLogger(LOGGER)
    handlers, level = list(logger.handlers), logger.level
    for name in ("RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


def _ours():
    return [h for h in logging.getLogger(LOGGER).handlers if isinstance(h, StderrHandler)]


def test_one_handler_however_often_it_is_set_up(capsys):
    for verbosity in (0, 1, 0):
        setup_logging(verbosity)
    assert len(_ours()) == 1
    logging.getLogger("imgrade.pipeline.trainer").info("data: 90 images")
    assert capsys.readouterr().err == "data: 90 images\n"  # the bare message, once, on the stderr of now


def test_quiet_and_verbose_levels(capsys):
    log = logging.getLogger("imgrade.somewhere")
    setup_logging(-1)
    log.info("progress")
    log.warning("a warning")
    assert capsys.readouterr().err == "a warning\n"
    setup_logging(1)
    log.debug("detail")
    assert capsys.readouterr().err == "detail\n"
    setup_logging(0)
    log.debug("detail")
    log.info("progress")
    assert capsys.readouterr().err == "progress\n"


@pytest.mark.parametrize(
    "env, shown",
    [
        ({"RANK": "0", "LOCAL_RANK": "0"}, ["progress", "a warning"]),
        ({"RANK": "1", "LOCAL_RANK": "1"}, ["a warning"]),
        ({"LOCAL_RANK": "2"}, ["a warning"]),
    ],
)
def test_only_rank_zero_logs_progress(env, shown, monkeypatch, capsys):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    setup_logging(1)  # -v on another rank still shows warnings only
    log = logging.getLogger("imgrade.training.loop")
    log.debug("detail")
    log.info("progress")
    log.warning("a warning")
    expected = (["detail"] if shown[0] == "progress" else []) + shown
    assert capsys.readouterr().err.splitlines() == expected


def test_records_still_reach_caplog(caplog):
    setup_logging(0)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        logging.getLogger("imgrade.data").info("split: 54 train")
    assert "split: 54 train" in caplog.text


@pytest.mark.parametrize(
    "argv, level",
    [
        (["model", "summary", "--depth", "11"], logging.INFO),
        (["-q", "model", "summary", "--depth", "11"], logging.WARNING),
        (["model", "summary", "--depth", "11", "-v"], logging.DEBUG),
        (["-q", "model", "summary", "--depth", "11", "--verbose"], logging.DEBUG),  # the verb's flag wins
    ],
)
def test_cli_flags_set_the_level(argv, level, capsys):
    assert main(argv) == 0
    assert logging.getLogger(LOGGER).level == level and len(_ours()) == 1
