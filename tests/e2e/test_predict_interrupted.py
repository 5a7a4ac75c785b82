"""``imgrade predict --out FILE`` stopped by SIGTERM while its decoder threads are busy: the process
ends at once with status 143, no thread keeps it alive, and FILE is left as it was.

The job runs in a real process stopped by a real signal. To stop it while a decoder thread is in
the middle of a photo, the child process (not imgrade) wraps ``load_image``: one photo of the third
batch becomes a long decode that checks in as ``decode_image`` does, and says "decoding" on stdout.
Then the grading thread is either grading an earlier batch or waiting for that one.
"""

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

START_S = 300  # the child imports torch and loads the run: slow on 2 busy cores

CHILD = """
import sys, threading

import imgrade.pipeline.predictor
from imgrade.data import prefetch

load_image = prefetch.load_image


def long_decode(path, resize, check=None):
    if path.endswith("p4.png"):
        print("decoding", flush=True)
        while True:  # a huge photo; only the pool closing (check raising) ends it
            check()
            threading.Event().wait(0.01)
    return load_image(path, resize, check=check)


prefetch.load_image = long_decode
imgrade.pipeline.predictor.CHUNK = 2
from imgrade.cli import main

sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(8):
        Image.new("RGB", (32, 32), (40 * i, 120, 60)).save(folder / f"p{i}.png")
    return folder


def test_sigterm_stops_the_decoder_threads_and_leaves_the_old_file(coral_run, photos, tmp_path):
    out = tmp_path / "grades.csv"
    out.write_text("yesterday's grades\n")
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, "predict", str(coral_run), str(photos), "--out", str(out)]
        + ["--decode-threads", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "IMGRADE_NO_TCMALLOC": "1"},
    )
    ready, _, _ = select.select([process.stdout], [], [], START_S)
    line = process.stdout.readline() if ready else ""
    if line != "decoding\n":
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"predict never started decoding p4.png within {START_S} s: {err}")
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("predict did not end after SIGTERM: a decoder thread kept it alive")
    assert process.returncode == 143, err
    assert err.strip().splitlines()[-1] == "imgrade: terminated (SIGTERM)"
    assert out.read_text() == "yesterday's grades\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grades.csv", "photos"]  # no temporary file
