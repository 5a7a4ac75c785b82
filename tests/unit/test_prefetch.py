"""Decoding photos ahead of the grader in a pool of threads: order, errors, bounded memory, shutdown."""

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgrade.data import prefetch
from imgrade.data.prefetch import THREAD_NAME, ChunkDecoder, decode_photos

WAIT_S = 30  # a guard against a hang only: each wait below ends as soon as the other thread gets there


def _photos(folder: Path, n: int, bad: set[int]) -> list[str]:
    """``n`` photos of distinct colours (index i is coloured (i, 2i, 3i) mod 256); those in ``bad`` are broken."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"p{i:03d}.png"
        if i in bad:
            path.write_text("not a photo\n") if i % 2 else path.write_bytes(b"")
        else:
            Image.new("RGB", (20, 12), (i % 256, 2 * i % 256, 3 * i % 256)).save(path)
        paths.append(str(path))
    return paths


def _decoder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)]


def _rows(chunks) -> list[tuple[str, int | None, str | None]]:
    """(path, red of the decoded photo or None, error or None) per photo, in the order they come."""
    rows = []
    for decoded in chunks:
        pixels = dict(zip(decoded.good, decoded.images))
        for i, path in enumerate(decoded.paths):
            rows.append((path, int(pixels[i][0, 0, 0]) if i in pixels else None, decoded.errors.get(i)))
    return rows


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threads_give_the_rows_of_decoding_one_by_one_in_input_order(tmp_path, threads):
    bad = {0, 4, 5, 9, 16, 22}  # the first photo, two in a row, across chunk boundaries, the last
    paths = [*_photos(tmp_path, 23, bad), "", str(tmp_path / "gone.png")]
    with ChunkDecoder(paths, 8, chunk=4, threads=0) as chunks:
        serial = _rows(chunks)
    with ChunkDecoder(paths, 8, chunk=4, threads=threads) as chunks:
        assert _rows(chunks) == serial
    assert [path for path, _, _ in serial] == paths
    assert [red for _, red, _ in serial] == [None if i in bad else i for i in range(23)] + [None, None]
    errors = [error for _, _, error in serial]
    assert "is not an image" in errors[5] and "is empty" in errors[4] and "p004.png" in errors[4]
    assert errors[23] == "an empty path: give each photo's path" and "gone.png does not exist" in errors[24]
    assert _decoder_threads() == []


def test_one_chunk_decoded_at_once_matches_the_chunks(tmp_path):
    paths = _photos(tmp_path, 10, bad={3})
    whole = decode_photos(paths, 8)
    with ChunkDecoder(paths, 8, chunk=3, threads=2) as chunks:
        parts = list(chunks)
    assert whole.good == [i for i in range(10) if i != 3] and list(whole.errors) == [3]
    np.testing.assert_array_equal(whole.images, np.concatenate([part.images for part in parts]))


def test_a_chunk_is_decoded_only_once_the_reader_is_done_with_the_chunk_ahead_of_it(tmp_path, monkeypatch):
    """At most AHEAD chunks are decoded beyond the one being read: memory does not grow with the folder."""
    paths = _photos(tmp_path, 24, bad=set())
    load_image, read, seen = prefetch.load_image, [], {}

    def record(path, resize, check=None):
        seen[path] = len(read)  # chunks the reader had finished when this photo was decoded
        return load_image(path, resize, check=check)

    monkeypatch.setattr(prefetch, "load_image", record)
    with ChunkDecoder(paths, 8, chunk=3, threads=2) as chunks:
        for decoded in chunks:
            read.append(len(decoded.paths))
    for i, path in enumerate(paths):
        assert seen[path] >= i // 3 - prefetch.AHEAD, (i, seen[path])


def test_the_next_chunk_is_decoded_while_the_reader_holds_this_one(tmp_path, monkeypatch):
    paths = _photos(tmp_path, 4, bad=set())
    load_image, second_chunk_decoded = prefetch.load_image, threading.Event()

    def record(path, resize, check=None):
        pixels = load_image(path, resize, check=check)
        if path == paths[-1]:
            second_chunk_decoded.set()
        return pixels

    monkeypatch.setattr(prefetch, "load_image", record)
    with ChunkDecoder(paths, 8, chunk=2, threads=1) as chunks:
        first = next(iter(chunks))
        assert first.paths == paths[:2]
        assert second_chunk_decoded.wait(WAIT_S), "the second chunk was not decoded while the first was held"


def test_an_unexpected_error_in_a_decoder_thread_is_raised_in_order_and_the_pool_stops(tmp_path, monkeypatch):
    paths = _photos(tmp_path, 12, bad=set())
    load_image = prefetch.load_image

    def fail_on_the_sixth(path, resize, check=None):
        if path == paths[5]:
            raise RuntimeError("a bug in the decoder")
        return load_image(path, resize, check=check)

    monkeypatch.setattr(prefetch, "load_image", fail_on_the_sixth)
    read = []
    with pytest.raises(RuntimeError, match="a bug in the decoder"):
        with ChunkDecoder(paths, 8, chunk=4, threads=2) as chunks:
            for decoded in chunks:
                read.append(decoded.paths)
    assert read == [paths[:4]]  # the chunk before the failing one, not the ones after
    assert _decoder_threads() == []


@pytest.mark.parametrize("stop", [KeyboardInterrupt, OSError])
def test_leaving_the_block_stops_a_thread_in_the_middle_of_a_photo(tmp_path, monkeypatch, stop):
    """Ctrl-C (or the writer failing) while a decoder thread is inside a long decode: the decode
    stops at its next check, and no thread is left when the block is left."""
    paths = _photos(tmp_path, 6, bad=set())
    load_image, decoding, stopped = prefetch.load_image, threading.Event(), threading.Event()

    def long_decode(path, resize, check=None):
        if path != paths[2]:
            return load_image(path, resize, check=check)
        decoding.set()
        try:
            for _ in range(WAIT_S * 100):  # a decode of a huge photo, checking in as decode_image does
                check()
                threading.Event().wait(0.01)
        except BaseException:
            stopped.set()
            raise
        return load_image(path, resize)  # the pool never stopped this decode: the test fails below

    monkeypatch.setattr(prefetch, "load_image", long_decode)
    with pytest.raises(stop):
        with ChunkDecoder(paths, 8, chunk=2, threads=2) as chunks:
            for _ in chunks:
                assert decoding.wait(WAIT_S)
                raise stop()
    assert stopped.is_set() and _decoder_threads() == []
