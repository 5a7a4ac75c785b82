"""Fetch the published CUCUMBER-9 archives: the only network access in imgrade.

Every failure becomes a DataError within ``timeout`` seconds that says where to put an archive
downloaded by hand, and nothing half-written is left behind.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from imgrade.core.errors import ConfigError, DataError
from imgrade.data.cucumber9 import read_cucumber9

logger = logging.getLogger(__name__)

CUCUMBER9_BASE_URL = "https://github.com/workpiles/CUCUMBER-9/raw/master"
CUCUMBER9_ARCHIVES = {1: "prototype_1/cucumber-9-python.tar.gz", 2: "prototype_2/cucumber-9-p2-python.tar.gz"}
CUCUMBER9_URLS = {prototype: f"{CUCUMBER9_BASE_URL}/{archive}" for prototype, archive in CUCUMBER9_ARCHIVES.items()}
BASE_URL_ENV = "IMGRADE_CUCUMBER9_BASE_URL"  # replaces CUCUMBER9_BASE_URL (a mirror, a test server)

_CHUNK = 1 << 16


def _one_line(reason) -> str:
    return " ".join(str(reason).split())


def _stream(url: str, out, *, timeout: float, progress: bool, label: str) -> None:
    """Copy ``url`` into the open file ``out``; any failure -> DataError("could not download URL (reason)")."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
            received = 0
            show_bar = progress and sys.stderr.isatty()
            if progress and not show_bar:
                logger.info(f"downloading {url}")
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                file=sys.stderr,
                disable=not show_bar,
            ) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        e.close()
        raise DataError(f"could not download {url} (HTTP {e.code} {e.reason})") from None
    except urllib.error.URLError as e:
        raise DataError(f"could not download {url} ({_one_line(e.reason)})") from None
    except (OSError, http.client.HTTPException, ValueError) as e:  # timeouts, resets, bad URLs
        raise DataError(f"could not download {url} ({type(e).__name__}: {_one_line(e)})") from None
    # http.client returns a short body without complaint when the server closes early
    if total is not None and received != total:
        raise DataError(f"could not download {url} (connection closed after {received} of {total} bytes)")


def download_file(url: str, dest: Path, *, timeout: float = 10.0, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` through a temporary file beside it, renamed into place when complete.

    Args:
        url: what to fetch (http, https or file).
        dest: where to save it; its folder is created.
        timeout: seconds to wait for the connection and for each read.
        progress: a tqdm bar on stderr (a single line when stderr is not a terminal).

    Returns:
        ``dest``.

    Raises:
        DataError: "could not download URL (reason)" for any network failure, an HTTP error or a
            body shorter than its Content-Length; the temporary file is removed and an existing
            ``dest`` is left as it was.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            _stream(url, f, timeout=timeout, progress=progress, label=dest.name)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return dest


def download_cucumber9(
    prototype: int, dest_dir, *, base_url: str | None = None, timeout: float = 10.0, progress: bool = True
) -> Path:
    """Download a CUCUMBER-9 archive into ``dest_dir`` and check that it opens.

    Args:
        prototype: 1 (cucumber-9-python.tar.gz) or 2 (cucumber-9-p2-python.tar.gz).
        dest_dir: the folder to save the archive in (created).
        base_url: replaces https://github.com/workpiles/CUCUMBER-9/raw/master; defaults to the
            environment variable IMGRADE_CUCUMBER9_BASE_URL, else GitHub.
        timeout: seconds to wait for the connection and for each read.
        progress: show a progress bar on stderr.

    Returns:
        The archive's path, ``dest_dir/<archive name>``. It is downloaded under a temporary name
        and renamed only once :func:`read_cucumber9` opens it, so an archive already there is
        replaced only by one that works.

    Raises:
        ConfigError: a prototype other than 1 or 2.
        DataError: the download failed, or what arrived is not a CUCUMBER-9 archive (it is
            removed); the message says where to save an archive downloaded by hand.
    """
    if prototype not in CUCUMBER9_ARCHIVES:
        raise ConfigError(f"CUCUMBER-9 has prototypes 1 and 2, not {prototype!r}: pass --prototype 1 or 2")
    base = (base_url or os.environ.get(BASE_URL_ENV) or CUCUMBER9_BASE_URL).rstrip("/")
    url = f"{base}/{CUCUMBER9_ARCHIVES[prototype]}"
    dest = Path(dest_dir) / Path(CUCUMBER9_ARCHIVES[prototype]).name
    by_hand = f"Download it by hand from {url} and save it as {dest}, then use --data {dest}"
    partial = dest.with_name(f".{dest.name}.download")
    try:
        try:
            download_file(url, partial, timeout=timeout, progress=progress)
        except DataError as e:
            raise DataError(f"{e}. {by_hand}") from None
        try:
            read_cucumber9(partial)
        except DataError as e:
            reason = f"downloaded {url} but it is not a CUCUMBER-9 archive ({e}); removed it"
            raise DataError(f"{reason}. {by_hand}") from None
        os.replace(partial, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
    return dest
