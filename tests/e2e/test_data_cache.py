"""`imgrade train --workers N --cache DIR` on a folder set: decoded once, read from the cache after."""

from imgrade.cli import main


def test_second_training_run_reads_decoded_photos_from_the_cache(tmp_path, capsys):
    data = tmp_path / "folders"
    assert main(["data", "synth", "--out", str(data), "--n", "150", "--format", "folders", "--seed", "2"]) == 0
    common = ["--data", str(data), "--epochs", "1", "--depth", "11", "--workers", "2", "--cache", str(tmp_path / "cache")]
    capsys.readouterr()
    assert main(["train", *common, "--out", str(tmp_path / "a")]) == 0
    assert "decoded 150 images with 2 workers" in capsys.readouterr().err
    assert main(["train", *common, "--out", str(tmp_path / "b")]) == 0
    assert "150 decoded images from the cache" in capsys.readouterr().err
    same = (tmp_path / "a" / "history.csv").read_text().splitlines()[1].split(",")[:3]
    assert (tmp_path / "b" / "history.csv").read_text().splitlines()[1].split(",")[:3] == same


def test_cache_off_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IMGRADE_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "folders"
    assert main(["data", "synth", "--out", str(data), "--n", "40", "--format", "folders"]) == 0
    assert main(["train", "--data", str(data), "--epochs", "1", "--depth", "11", "--cache", "off", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "decoded" not in err and "from the cache" not in err
    assert not (tmp_path / "cache").exists()
