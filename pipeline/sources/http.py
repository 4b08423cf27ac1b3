"""HTTP for the online sources: retries with backoff, byte counts for progress, and the settings under
which GDAL's ``/vsicurl/`` reads remote COGs with the same timeout and retries.

Every request has a timeout. 429, 5xx and dropped or refused connections are retried with
exponential backoff and full jitter, waiting at least what the server's ``Retry-After`` asks; any
other status fails at once (a 404 will not heal by waiting). URLs are logged and reported without
their query string: Planetary Computer's signed URLs carry a SAS token there.
"""
from __future__ import annotations

import email.utils
import logging
import math
import random
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import requests

from pipeline.errors import SourceError

log = logging.getLogger(__name__)

USER_AGENT = "kachin-ree-watch"
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
            s.headers["User-Agent"] = USER_AGENT
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


class ShortRead(Exception):
    pass


def _first_line(e: BaseException) -> str:
    return redact(str(e).splitlines()[0] if str(e) else type(e).__name__)[:200]


def _hint(status: int) -> str:
    return {401: ": the credentials were refused", 403: ": access denied (an expired signature or missing credentials)",
            404: ": the asset is gone (re-run the search)"}.get(status, "")


def gdal_http_options(http: Http | None, url: str) -> dict:
    """GDAL's ``/vsicurl/`` settings for reading ``url`` under the same timeout and retry policy as
    ``http``: GDAL fetches the header and only the tiles a window needs, in merged range requests,
    retries 429/5xx and asks again for the rest of a body cut short."""
    timeout, retries, backoff = (http.timeout_s, http.retries, http.backoff_s) if http else (30.0, 5, 1.0)
    for name in ("rasterio._env", "rasterio._err"):  # GDAL's messages name the URL, SAS token and all
        logging.getLogger(name).addFilter(_REDACT)
    opts = {"GDAL_HTTP_TIMEOUT": max(1, math.ceil(timeout)), "GDAL_HTTP_MAX_RETRY": retries,
            "GDAL_HTTP_RETRY_DELAY": backoff,  # doubled by GDAL at each retry
            "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no listing of the asset's folder
            "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
            "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES", "GDAL_HTTP_MULTIPLEX": "YES", "VSI_CACHE": "TRUE",
            "GDAL_HTTP_USERAGENT": USER_AGENT}
    if url in _FAILED:
        # GDAL remembers a failed URL for the life of the process and would fail it again unasked; a
        # read that bypasses its cache asks the server afresh (and clears the memory of the failure)
        opts["CPL_VSIL_CURL_NON_CACHED"] = "/vsicurl/"
    return opts


def gdal_download_error(url: str, e: Exception, http: Http | None) -> DownloadError:
    """GDAL's failure to read ``url`` as one line that says what to do."""
    _FAILED.add(url)
    msg = redact_text(str(e).splitlines()[0] if str(e) else type(e).__name__)[:200]
    m = re.search(r"HTTP (?:response|error) code: (\d+)", msg)
    status = int(m.group(1)) if m else None
    if status is not None and status not in RETRY_STATUS:
        err = DownloadError(f"GET {redact(url)} failed: HTTP {status}{_hint(status)}")
        err.status = status
        return err
    tries = (http.retries if http else 5) + 1
    last = f"HTTP {status}" if status is not None else msg
    return DownloadError(f"GET {redact(url)} failed after {tries} tries (last: {last}): the server is down or "
                         "throttling; run again later (the cache keeps what arrived)")


_FAILED: set[str] = set()


def redact_text(text: str) -> str:
    """``text`` with every URL's query string cut (as ``redact`` does to one URL)."""
    return re.sub(r"(https?://[^\s?'\"]+)\?[^\s'\"]*", r"\1", text)


class _RedactUrls(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact_text(record.getMessage()), None
        return True


_REDACT = _RedactUrls()
