"""HTTP for the online sources: retries with backoff, range reads of COGs, byte counts for progress.

Every request has a timeout. 429, 5xx and dropped or refused connections are retried with
exponential backoff and full jitter, waiting at least what the server's ``Retry-After`` asks; any
other status fails at once (a 404 will not heal by waiting). A range read that arrives short (a
connection cut mid-body) is retried like a dropped connection, so a partial body never reaches a
cache file. URLs are logged and reported without their query string: Planetary Computer's signed
URLs carry a SAS token there.
"""
from __future__ import annotations

import email.utils
import io
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import requests

from pipeline.errors import SourceError

log = logging.getLogger(__name__)

RETRY_STATUS = {429, 500, 502, 503, 504}
RETRY_EXC = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
             requests.exceptions.ContentDecodingError)


class DownloadError(SourceError):
    """A request kept failing after every retry, or failed in a way retrying cannot fix."""


class Progress(Protocol):
    """What the CLI passes in to show progress; library code only reports to it."""

    def add_bytes(self, n: int) -> None: ...

    def scene_done(self) -> None: ...

    def set_scenes(self, total: int) -> None: ...


class NoProgress:
    def add_bytes(self, n: int) -> None:
        pass

    def scene_done(self) -> None:
        pass

    def set_scenes(self, total: int) -> None:
        pass


def redact(url: str) -> str:
    """A URL safe to log: no query string (SAS tokens, signatures), no user:password."""
    base = url.split("?", 1)[0]
    if "@" in base.split("//", 1)[-1].split("/", 1)[0]:
        scheme, rest = base.split("//", 1)
        base = f"{scheme}//***@{rest.split('@', 1)[1]}"
    return base


@dataclass
class Stats:
    requests: int = 0
    retries: int = 0
    bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, requests: int = 0, retries: int = 0, nbytes: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.retries += retries
            self.bytes += nbytes

    def as_dict(self) -> dict:
        return {"requests": self.requests, "retries": self.retries, "bytes": self.bytes}


def retry_after_s(resp: requests.Response | None) -> float | None:
    if resp is None:
        return None
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class Http:
    """A requests session with timeouts, retries and byte counting, shared by the fetch threads."""

    def __init__(self, timeout_s: float = 30.0, retries: int = 5, backoff_s: float = 1.0, max_backoff_s: float = 60.0,
                 progress: Progress | None = None, sleep: Callable[[float], None] = time.sleep):
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.progress = progress or NoProgress()
        self.stats = Stats()
        self._sleep = sleep
        self._local = threading.local()

    @property
    def session(self) -> requests.Session:
        # requests.Session is not documented as thread-safe: one per thread
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            s.headers["User-Agent"] = "kachin-ree-watch"
        return s

    def _delay(self, attempt: int, resp: requests.Response | None) -> float:
        cap = min(self.max_backoff_s, self.backoff_s * 2 ** attempt)
        delay = random.uniform(cap / 2, cap)  # jitter: scheduled runs of many AOIs must not retry in step
        asked = retry_after_s(resp)
        if asked is not None:
            delay = max(delay, min(asked, self.max_backoff_s))
        return delay

    def request(self, method: str, url: str, *, expect: Callable[[requests.Response], None] | None = None,
                **kw) -> requests.Response:
        """Send with retries; ``expect`` may raise ``ShortRead`` to have a bad body retried too."""
        kw.setdefault("timeout", self.timeout_s)
        last = ""
        for attempt in range(self.retries + 1):
            resp = None
            try:
                resp = self.session.request(method, url, **kw)
                self.stats.add(requests=1)
                if resp.status_code in RETRY_STATUS:
                    last = f"HTTP {resp.status_code}"
                elif resp.status_code >= 400:
                    err = DownloadError(f"{method} {redact(url)} failed: HTTP {resp.status_code} {resp.reason}"
                                        f"{_hint(resp.status_code)}")
                    err.status = resp.status_code  # e.g. 401: a token to refresh
                    raise err
                else:
                    if expect is not None:
                        expect(resp)
                    return resp
            except (*RETRY_EXC, ShortRead) as e:
                self.stats.add(requests=1)
                last = f"{type(e).__name__}: {_first_line(e)}"
            if attempt == self.retries:
                break
            wait = self._delay(attempt, resp)
            log.info("%s %s: %s, retry %d/%d in %.1f s", method, redact(url), last, attempt + 1, self.retries, wait)
            self.stats.add(retries=1)
            self._sleep(wait)
        raise DownloadError(f"{method} {redact(url)} failed after {self.retries + 1} tries (last: {last}): "
                            "the server is down or throttling; run again later (the cache keeps what arrived)")

    def get_json(self, url: str, **kw) -> dict:
        resp = self.request("GET", url, **kw)
        try:
            return resp.json()
        except ValueError:
            raise DownloadError(f"GET {redact(url)} did not return JSON: check the URL") from None

    def size(self, url: str) -> int:
        """Total size of a remote file, from a one-byte range request (works where HEAD is refused)."""
        resp = self.request("GET", url, headers={"Range": "bytes=0-0"})
        cr = resp.headers.get("Content-Range", "")
        if resp.status_code == 206 and "/" in cr and cr.rsplit("/", 1)[1].isdigit():
            return int(cr.rsplit("/", 1)[1])
        raise DownloadError(f"{redact(url)} does not support HTTP range requests (status {resp.status_code}, "
                            f"Content-Range {cr!r}): serve the assets as COGs from a server that does")

    def get_range(self, url: str, start: int, stop: int) -> bytes:
        """Bytes [start, stop) of a remote file, complete or an error."""
        want = stop - start

        def check(resp):
            if resp.status_code != 206 and not (resp.status_code == 200 and start == 0):
                raise ShortRead(f"status {resp.status_code} to a range request")
            body = resp.content
            if resp.status_code == 200:
                body = body[:want]
            if len(body) != want:
                raise ShortRead(f"got {len(body)} of {want} bytes")
            resp._checked_body = body

        resp = self.request("GET", url, headers={"Range": f"bytes={start}-{stop - 1}"}, expect=check)
        body = resp._checked_body
        self.stats.add(nbytes=len(body))
        self.progress.add_bytes(len(body))
        return body


class ShortRead(Exception):
    pass


def _first_line(e: BaseException) -> str:
    return redact(str(e).splitlines()[0] if str(e) else type(e).__name__)[:200]


def _hint(status: int) -> str:
    return {401: ": the credentials were refused", 403: ": access denied (an expired signature or missing credentials)",
            404: ": the asset is gone (re-run the search)"}.get(status, "")


class RangeFile(io.RawIOBase):
    """A read-only, seekable file over HTTP range requests, with a block cache.

    rasterio opens it through its ``opener=`` hook, so GDAL reads only the COG's header and the tiles
    that cover the AOI, while every byte goes through ``Http`` (retries, timeouts, counts).
    """

    def __init__(self, http: Http, url: str, block: int = 256 * 1024):
        super().__init__()
        self.http, self.url, self.block = http, url, block
        self._size = http.size(url)
        self._pos = 0
        self._blocks: dict[int, bytes] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _fill(self, first: int, last: int) -> None:
        missing = [b for b in range(first, last + 1) if b not in self._blocks]
        while missing:
            run = [missing.pop(0)]
            while missing and missing[0] == run[-1] + 1:
                run.append(missing.pop(0))
            start = run[0] * self.block
            stop = min(self._size, (run[-1] + 1) * self.block)
            data = self.http.get_range(self.url, start, stop)
            for i, b in enumerate(run):
                self._blocks[b] = data[i * self.block:(i + 1) * self.block]

    def read(self, size: int = -1) -> bytes:
        if self._pos >= self._size:
            return b""
        stop = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        first, last = self._pos // self.block, (stop - 1) // self.block
        self._fill(first, last)
        buf = b"".join(self._blocks[b] for b in range(first, last + 1))
        off = self._pos - first * self.block
        out = buf[off:off + (stop - self._pos)]
        self._pos = stop
        return out

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


try:  # rasterio >= 1.4: Python file openers behind GDAL's virtual file systems
    from rasterio.abc import FileContainer
except ImportError:  # pragma: no cover
    FileContainer = object


class HttpOpener(FileContainer):
    """rasterio ``opener=``: serves GDAL the remote file through ``RangeFile``."""

    def __init__(self, http: Http):
        self.http = http
        self._sizes: dict[str, int] = {}

    def open(self, path: str, mode: str = "rb", **kwargs) -> RangeFile:
        return RangeFile(self.http, path)

    def size(self, path: str) -> int:
        if not str(path).startswith(("http://", "https://")):
            return 0  # rasterio probes the opener with a dummy name on registration
        if path not in self._sizes:
            self._sizes[path] = self.http.size(path)
        return self._sizes[path]

    def isfile(self, path: str) -> bool:
        return str(path).startswith(("http://", "https://"))

    def isdir(self, path: str) -> bool:
        return False

    def ls(self, path: str) -> list[str]:
        return []

    def mtime(self, path: str) -> int:
        return 0

    def rm(self, path: str) -> None:
        raise OSError("read-only")
