"""HTTP for the online sources: retries with backoff, byte counts for progress, and the settings under
which GDAL's ``/vsicurl/`` reads remote COGs with the same timeout and retries.

Every request has a timeout. 429, 5xx and dropped or refused connections are retried by urllib3's
``Retry`` (or by GDAL, for COG reads) with exponential backoff and jitter, waiting what the
server's ``Retry-After`` asks; any other status fails at once (a 404 will not heal by waiting). URLs
are logged and reported without their query string: Planetary Computer's signed URLs carry a SAS
token there.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from dataclasses import dataclass, field
from typing import Protocol

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from pipeline.config import DownloadConfig
from pipeline.errors import SourceError

log = logging.getLogger(__name__)

USER_AGENT = "kachin-ree-watch"
RETRY_STATUS = (429, 500, 502, 503, 504)


class DownloadError(SourceError):
    """A request kept failing after every retry, or failed in a way retrying cannot fix; ``status``: the
    last HTTP status, if the server answered (401: a token to refresh)."""

    def __init__(self, message: str = "", status: int | None = None):
        super().__init__(message)
        self.status = status


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


class CountingRetry(Retry):
    """urllib3's ``Retry`` that counts each retry (and the request it makes) in ``stats`` and logs it.
    A ``Retry-After`` longer than the backoff cap is cut to it: a server asking for an hour would
    stall a whole scheduled run."""

    def __init__(self, *args, stats: Stats | None = None, **kw):
        super().__init__(*args, **kw)
        self.stats = stats

    def new(self, **kw) -> CountingRetry:
        retry = super().new(**kw)
        retry.stats = self.stats
        return retry

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        retry = super().increment(method, url, response, error, _pool, _stacktrace)  # raises when spent
        if self.stats is not None:
            self.stats.add(requests=1, retries=1)
        why = _first_line(error) if error is not None else f"HTTP {response.status if response else '?'}"
        log.info("%s %s: %s, retry %d", method, redact(url or ""), why, len(retry.history))
        return retry

    def get_retry_after(self, response) -> float | None:
        asked = super().get_retry_after(response)
        return None if asked is None else min(asked, self.backoff_max)


def retry_policy(d: DownloadConfig, stats: Stats | None = None) -> CountingRetry:
    """The one retry policy of every HTTP client here (requests sessions, pystac-client): 429/5xx and
    dropped or refused connections, exponential backoff with jitter (scheduled runs of many AOIs must
    not retry in step), ``Retry-After`` honoured. Every method, POST included: the Sentinel Hub
    Process API renders the same image for the same request."""
    return CountingRetry(
        total=d.retries,
        backoff_factor=d.backoff_s,
        backoff_max=d.max_backoff_s,
        backoff_jitter=d.backoff_s,
        status_forcelist=RETRY_STATUS,
        allowed_methods=None,
        respect_retry_after_header=True,
        raise_on_status=False,
        stats=stats,
    )


class Http:
    """A requests session per thread with the download config's timeout and retry policy, counting
    requests, retries and bytes; shared by the fetch threads."""

    def __init__(self, download: DownloadConfig | None = None, progress: Progress | None = None):
        self.download = download or DownloadConfig()
        self.progress = progress or NoProgress()
        self.stats = Stats()
        self._local = threading.local()

    @property
    def session(self) -> requests.Session:
        # requests.Session is not documented as thread-safe: one per thread
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            s.headers["User-Agent"] = USER_AGENT
            adapter = HTTPAdapter(max_retries=retry_policy(self.download, self.stats))
            s.mount("http://", adapter)
            s.mount("https://", adapter)
        return s

    def request(self, method: str, url: str, **kw) -> requests.Response:
        """Send with retries; the body is read here, so a connection cut mid-body fails this call."""
        kw.setdefault("timeout", self.download.timeout_s)
        self.stats.add(requests=1)
        tries = self.download.retries + 1
        try:
            resp = self.session.request(method, url, **kw)
            _ = resp.content
        except requests.RequestException as e:
            raise DownloadError(
                f"{method} {redact(url)} failed after {tries} tries (last: {_first_line(e)}): the "
                "server is down or unreachable; check the URL and the network, or run again later "
                "(the cache keeps what arrived)"
            ) from None
        if resp.status_code in RETRY_STATUS:
            raise DownloadError(
                f"{method} {redact(url)} failed after {tries} tries (last: HTTP {resp.status_code}): "
                "the server is down or throttling; run again later (the cache keeps what arrived)"
            )
        if resp.status_code >= 400:
            raise DownloadError(
                f"{method} {redact(url)} failed: HTTP {resp.status_code} {resp.reason}{_hint(resp.status_code)}",
                status=resp.status_code,
            )
        return resp


def _first_line(e: BaseException) -> str:
    return redact(str(e).splitlines()[0] if str(e) else type(e).__name__)[:200]


def _hint(status: int) -> str:
    return {
        401: ": the credentials were refused",
        403: ": access denied (an expired signature or missing credentials)",
        404: ": the asset is gone (re-run the search)",
    }.get(status, "")


def gdal_http_options(http: Http | None, url: str) -> dict:
    """GDAL's ``/vsicurl/`` settings for reading ``url`` under the same timeout and retry policy as
    ``http``: GDAL fetches the header and only the tiles a window needs, in merged range requests,
    retries 429/5xx and asks again for the rest of a body cut short."""
    d = http.download if http else DownloadConfig()
    for name in ("rasterio._env", "rasterio._err"):  # GDAL's messages name the URL, SAS token and all
        logging.getLogger(name).addFilter(_REDACT)
    opts = {
        "GDAL_HTTP_TIMEOUT": max(1, math.ceil(d.timeout_s)),
        "GDAL_HTTP_MAX_RETRY": d.retries,
        "GDAL_HTTP_RETRY_DELAY": d.backoff_s,  # doubled by GDAL at each retry
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no listing of the asset's folder
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "GDAL_HTTP_MULTIPLEX": "YES",
        "VSI_CACHE": "TRUE",
        "GDAL_HTTP_USERAGENT": USER_AGENT,
    }
    if url in _FAILED:
        # GDAL remembers a failed URL for the life of the process and would fail it again unasked; a
        # read that bypasses its cache asks the server afresh (and clears the memory of the failure)
        opts["CPL_VSIL_CURL_NON_CACHED"] = "/vsicurl/"
    return opts


def gdal_download_error(url: str, e: Exception, http: Http | None) -> DownloadError | None:
    """GDAL's failure to fetch ``url`` as one line that says what to do; None when the fault is not
    the transfer's (the file arrived but does not read)."""
    _FAILED.add(url)
    msg = redact_text(str(e).splitlines()[0] if str(e) else type(e).__name__)[:200]
    m = re.search(r"HTTP (?:response|error) code: (\d+)", msg)
    status = int(m.group(1)) if m else None
    if status is None and not msg.startswith("CURL error"):
        return None
    if status is not None and status not in RETRY_STATUS:
        return DownloadError(f"GET {redact(url)} failed: HTTP {status}{_hint(status)}", status=status)
    tries = (http.download if http else DownloadConfig()).retries + 1
    last = f"HTTP {status}" if status is not None else msg
    return DownloadError(
        f"GET {redact(url)} failed after {tries} tries (last: {last}): the server is down or "
        "throttling; run again later (the cache keeps what arrived)"
    )


_FAILED: set[str] = set()


def redact_text(text: str) -> str:
    """``text`` with every URL's query string cut (as ``redact`` does to one URL)."""
    return re.sub(r"(https?://[^\s?'\"]+)\?[^\s'\"]*", r"\1", text)


class _RedactUrls(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact_text(record.getMessage()), None
        return True


_REDACT = _RedactUrls()
