"""probe-endpoints: fetch from the mirror the way its users do, on every protocol it serves.

Per endpoint: the root listing (reachability), the trace file (freshness), a sample of files
(random + newest + late/index files) checked for status, size and mtime, a few of them downloaded
and hashed against the manifest, and a fresh random missing path that must answer 404 / 550 (a
new name each time: CloudFront caches 404s). Each probe has a timeout and its own latency; probes
of one endpoint run concurrently, each worker thread on its own connection.

rsync endpoints are probed with the rsync client, as downstream mirrors pull: the module's listing,
the trace file, the sample's listed sizes and mtimes, downloads hashed, and a missing path that must
fail with rsync's "No such file or directory". Where there is no rsync binary (the Lambda runtime)
they get a protocol handshake instead (greeting, module accepted): what tells a downstream mirror
the module is there.
"""

from __future__ import annotations

import calendar
import email.utils
import ftplib
import hashlib
import heapq
import http.client
import os
import random
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlsplit

from mirrorkeeper.manifest import Row
from mirrorkeeper.tiers import LateTiers, late_tier

READ_LIMIT = 1 << 20  # root listings and trace files are small; never buffer more than this
_EPOCH_RE = re.compile(rb"^Epoch:\s*(\d+)\s*$", re.MULTILINE)
FTP_SESSIONS = 4  # FTP servers cap sessions per address; the deployed one allows 15
BUSY_RETRIES = 4  # an FTP server at its cap of sessions for our address (421): tries after the first


class Outcome(StrEnum):
    OK = "ok"
    WRONG_STATUS = "wrong-status"
    WRONG_SIZE = "wrong-size"
    WRONG_MTIME = "wrong-mtime"
    WRONG_HASH = "wrong-hash"
    STALE = "stale"  # an older copy than the manifest's: a front-end cache not yet expired
    BAD_CONTENT = "bad-content"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    ERROR = "error"


class ProbeKind(StrEnum):
    ROOT = "root-listing"
    TRACE = "trace"
    FILE = "file"
    DOWNLOAD = "download"
    MISSING = "missing-path"
    HANDSHAKE = "handshake"


@dataclass(frozen=True)
class SampleFile:
    path: str
    size: int
    mtime: int
    sha256: str | None
    why: str  # random, newest or late
    download: bool = False


@dataclass
class ProbeResult:
    kind: ProbeKind
    path: str
    outcome: Outcome
    detail: str = ""
    latency_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


@dataclass
class EndpointReport:
    protocol: str
    url: str
    results: list[ProbeResult] = field(default_factory=list)
    trace_epoch: int | None = None
    probed_at: float = 0.0  # when its probes started (what an invalidation must have completed before)

    @property
    def passed(self) -> int:
        return sum(r.ok for r in self.results)

    @property
    def stale(self) -> int:
        return sum(r.outcome is Outcome.STALE for r in self.results)

    @property
    def failed(self) -> int:
        return len(self.results) - self.passed - self.stale

    @property
    def reachable(self) -> bool:
        first = next((r for r in self.results if r.kind in (ProbeKind.ROOT, ProbeKind.HANDSHAKE)), None)
        return first is not None and first.outcome not in (Outcome.UNREACHABLE, Outcome.TIMEOUT)

    @property
    def missing_check(self) -> bool | None:
        """True when a missing path got 404 / 550 / rsync's error; None when not checked (unreachable, a
        handshake only)."""
        found = [r for r in self.results if r.kind is ProbeKind.MISSING]
        return found[0].ok if found else None

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "url": self.url,
            "trace_epoch": self.trace_epoch,
            "probed_at": self.probed_at,
            "reachable": self.reachable,
            "passed": self.passed,
            "failed": self.failed,
            "stale": self.stale,
            "missing_check": self.missing_check,
            "results": [asdict(r) for r in self.results],
        }


# -- the sample ---------------------------------------------------------------------------------


def choose_sample(
    rows: Iterable[Row],
    late_patterns: LateTiers,
    random_count: int,
    newest_count: int,
    late_count: int,
    download_count: int,
    download_max_bytes: int,
    rng: random.Random,
) -> list[SampleFile]:
    """One pass over the manifest, bounded memory: reservoir samples for the random and the late
    files, a heap for the newest. Names with CR or LF are left out: FTP's command line cannot
    carry them."""
    randoms: list[Row] = []
    lates: list[Row] = []
    newest: list[tuple[int, str, Row]] = []
    seen_files = seen_late = 0
    for row in rows:
        if row[1] != "f" or "\n" in row[0] or "\r" in row[0]:
            continue
        seen_files += 1
        _reservoir(randoms, row, seen_files, random_count, rng)
        name = row[0].rsplit("/", 1)[-1]
        if late_tier(name, late_patterns) is not None:
            seen_late += 1
            _reservoir(lates, row, seen_late, late_count, rng)
        if newest_count:
            item = (int(row[3]), row[0], row)
            if len(newest) < newest_count:
                heapq.heappush(newest, item)
            elif item > newest[0]:
                heapq.heapreplace(newest, item)
    chosen: dict[str, SampleFile] = {}
    newest_first = [row for _, _, row in sorted(newest, reverse=True)]
    for why, group in (("late", lates), ("newest", newest_first), ("random", randoms)):
        for row in group:
            chosen.setdefault(row[0], SampleFile(row[0], int(row[2]), int(row[3]), row[5], why))
    sample = list(chosen.values())
    downloadable = [i for i, s in enumerate(sample) if s.sha256 and s.size <= download_max_bytes]
    for i in downloadable[:download_count]:
        s = sample[i]
        sample[i] = SampleFile(s.path, s.size, s.mtime, s.sha256, s.why, download=True)
    return sample


def _reservoir(chosen: list[Row], row: Row, seen: int, limit: int, rng: random.Random) -> None:
    if len(chosen) < limit:
        chosen.append(row)
    elif limit:
        slot = rng.randrange(seen)
        if slot < limit:
            chosen[slot] = row


def missing_path() -> str:
    """A name no mirror holds, new each time (a cached 404 would prove nothing)."""
    return f"mirrorkeeper-probe-missing-{uuid.uuid4().hex}"


def parse_trace_epoch(body: bytes) -> int | None:
    found = _EPOCH_RE.search(body)
    return int(found.group(1)) if found else None


# -- one protocol's session -------------------------------------------------------------------


def check_mtime(served: float | None, sample: SampleFile, source: str) -> None:
    """Served mtime against the manifest's. Older means a cache still holds the copy the last sync
    replaced (CloudFront does, for up to its TTL): STALE, which health forgives for a while, unless
    the sync's invalidation of it had completed."""
    if served is None:
        raise ProbeFindingError(Outcome.WRONG_MTIME, f"no usable {source}; upstream mtime {sample.mtime}")
    if int(served) < sample.mtime:
        raise ProbeFindingError(Outcome.STALE, f"{source} {int(served)} is older than the manifest's {sample.mtime}")
    if int(served) != sample.mtime:
        raise ProbeFindingError(Outcome.WRONG_MTIME, f"{source} {int(served)}, upstream mtime {sample.mtime}")


def _http_mtime(response: http.client.HTTPResponse) -> float | None:
    stamp = response.getheader("Last-Modified")
    try:
        return email.utils.parsedate_to_datetime(stamp).timestamp() if stamp else None
    except (TypeError, ValueError):
        return None


class ProbeFindingError(Exception):
    """A probe's finding other than OK, raised inside a session and recorded by the driver."""

    def __init__(self, outcome: Outcome, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail


class Session(Protocol):
    """One connection to an endpoint; each method raises ProbeFindingError on a finding."""

    def root(self) -> None: ...
    def read_small(self, path: str) -> bytes: ...
    def check_file(self, sample: SampleFile) -> None: ...
    def download(self, sample: SampleFile) -> str: ...
    def check_missing(self, path: str) -> None: ...
    def close(self) -> None: ...


class HttpSession:
    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.secure = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.secure else 80)
        self.base = parts.path if parts.path.endswith("/") else parts.path + "/"
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def _request(self, method: str, path: str) -> http.client.HTTPResponse:
        target = self.base + quote(path, safe="/-._~")
        for attempt in (1, 2):
            if self.conn is None:
                kind = http.client.HTTPSConnection if self.secure else http.client.HTTPConnection
                self.conn = kind(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, target, headers={"User-Agent": "mirrorkeeper-probe"})
                return self.conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # A kept-alive connection the server closed meanwhile: one fresh try.
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _get(self, path: str, method: str = "GET") -> http.client.HTTPResponse:
        response = self._request(method, path)
        if response.status != 200:
            response.read(READ_LIMIT)
            raise ProbeFindingError(Outcome.WRONG_STATUS, f"{method} answered {response.status}, expected 200")
        return response

    def root(self) -> None:
        body = self._get("").read(READ_LIMIT)
        if not body.strip():
            raise ProbeFindingError(Outcome.BAD_CONTENT, "the root listing is empty")

    def read_small(self, path: str) -> bytes:
        return self._get(path).read(READ_LIMIT)

    def check_file(self, sample: SampleFile) -> None:
        response = self._get(sample.path, "HEAD")
        response.read()
        check_mtime(_http_mtime(response), sample, "Last-Modified")
        length = response.getheader("Content-Length")
        if length is None or int(length) != sample.size:
            raise ProbeFindingError(Outcome.WRONG_SIZE, f"Content-Length {length}, manifest says {sample.size}")

    def download(self, sample: SampleFile) -> str:
        response = self._get(sample.path)
        check_mtime(_http_mtime(response), sample, "Last-Modified")
        digest = hashlib.sha256()
        for chunk in iter(lambda: response.read(1 << 16), b""):
            digest.update(chunk)
        return digest.hexdigest()

    def check_missing(self, path: str) -> None:
        response = self._request("GET", path)
        response.read(READ_LIMIT)
        if response.status != 404:
            raise ProbeFindingError(Outcome.WRONG_STATUS, f"a missing file answered {response.status}, expected 404")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class FtpSession:
    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.base = unquote(parts.path) if parts.path.endswith("/") else unquote(parts.path) + "/"
        # Another prober sharing our address (a Lambda's NAT, the verify of another mirror) may hold
        # the sessions the server allows it; as lftp does, wait and try again before calling it down.
        for attempt in range(BUSY_RETRIES + 1):
            self.ftp = ftplib.FTP(timeout=timeout, encoding="utf-8")
            try:
                self.ftp.connect(parts.hostname or "", parts.port or 21)
                break
            except ftplib.error_temp as exc:
                self.ftp.close()
                if not str(exc).startswith("421") or attempt == BUSY_RETRIES:
                    raise
                time.sleep(min(0.5 * 2**attempt, timeout / 4) * (1 + random.random()))
        self.ftp.login(unquote(parts.username or "anonymous"), unquote(parts.password or "mirrorkeeper@"))
        self.ftp.voidcmd("TYPE I")

    def _retr(self, path: str, sink: Callable[[bytes], None]) -> None:
        try:
            self.ftp.retrbinary("RETR " + self.base + path, sink)
        except ftplib.error_perm as exc:
            raise ProbeFindingError(Outcome.WRONG_STATUS, f"RETR answered {str(exc)[:80]}") from None

    def root(self) -> None:
        names = self.ftp.nlst(self.base)
        if not names:
            raise ProbeFindingError(Outcome.BAD_CONTENT, "the root listing is empty")

    def read_small(self, path: str) -> bytes:
        chunks: list[bytes] = []
        self._retr(path, lambda chunk: chunks.append(chunk) if sum(map(len, chunks)) < READ_LIMIT else None)
        return b"".join(chunks)

    def check_file(self, sample: SampleFile) -> None:
        try:
            stamp = self.ftp.voidcmd("MDTM " + self.base + sample.path).split()[-1]
            size = self.ftp.size(self.base + sample.path)
        except ftplib.error_perm as exc:
            raise ProbeFindingError(Outcome.WRONG_STATUS, f"SIZE/MDTM answered {str(exc)[:80]}") from None
        served = calendar.timegm(time.strptime(stamp[:14], "%Y%m%d%H%M%S")) if stamp[:14].isdigit() else None
        check_mtime(served, sample, "MDTM")
        if size != sample.size:
            raise ProbeFindingError(Outcome.WRONG_SIZE, f"SIZE {size}, manifest says {sample.size}")

    def download(self, sample: SampleFile) -> str:
        digest = hashlib.sha256()
        self._retr(sample.path, digest.update)
        return digest.hexdigest()

    def check_missing(self, path: str) -> None:
        try:
            self.ftp.retrbinary("RETR " + self.base + path, lambda _: None)
        except ftplib.error_perm as exc:
            if str(exc).startswith("550"):
                return
            answer = str(exc)[:80]
            raise ProbeFindingError(Outcome.WRONG_STATUS, f"a missing file answered {answer}, expected 550") from None
        raise ProbeFindingError(Outcome.WRONG_STATUS, "a missing file was served, expected 550")

    def close(self) -> None:
        try:
            self.ftp.quit()
        except (OSError, EOFError, ftplib.Error):
            self.ftp.close()


# rsync's listing of one file: permissions, size (--no-h: plain digits), date and time (TZ=UTC), name.
_RSYNC_LISTED = re.compile(rb"^\S+\s+(\d+) (\d{4})/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d) ")
_RSYNC_MISSING = b"No such file or directory"
_RSYNC_GLOB = re.compile(r"[*?\[]")


class RsyncSession:
    """The rsync client, one run per probe (a daemon connection serves one transfer)."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url if url.endswith("/") else url + "/"
        self.timeout = timeout

    def _run(self, path: str, *options: str, into: str = "") -> subprocess.CompletedProcess[bytes]:
        # The daemon reads a path with *, ? or [ as a glob pattern (then \\ escapes), and one starting
        # with '-' as an option: './' keeps a name a name.
        if _RSYNC_GLOB.search(path):
            path = re.sub(r"([\\*?\[])", r"\\\1", path)
        remote = self.url + "./" + path
        seconds = max(1, round(self.timeout))
        command = ["rsync", "--no-motd", "--no-h", f"--contimeout={seconds}", f"--timeout={seconds}", *options, remote]
        try:
            return subprocess.run(
                [*command, into] if into else command,
                capture_output=True,
                timeout=self.timeout * 3,
                env={**os.environ, "TZ": "UTC", "LC_ALL": "C"},
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"rsync took over {self.timeout * 3:g} s") from None

    @staticmethod
    def _said(result: subprocess.CompletedProcess[bytes]) -> str:
        lines = result.stderr.decode(errors="replace").strip().splitlines()
        return (lines[0] if lines else f"rsync exit {result.returncode}")[:200]

    def _failed(self, result: subprocess.CompletedProcess[bytes]) -> Exception:
        """What a failed run means: the module is not served (exit 5: unknown, refused, initialising; 10:
        no connection; 35: connect timeout), or a finding about the path asked for."""
        if result.returncode in (5, 10, 35):
            return ConnectionRefusedError(self._said(result))
        return ProbeFindingError(Outcome.WRONG_STATUS, self._said(result))

    def root(self) -> None:
        result = self._run("", "--list-only")
        if result.returncode != 0:
            raise self._failed(result)

    def _fetch(self, path: str, limit: int) -> bytes:
        with tempfile.TemporaryDirectory(prefix="mirrorkeeper-probe-") as scratch:
            result = self._run(path, into=os.path.join(scratch, "got"))
            if result.returncode != 0:
                raise self._failed(result)
            with open(os.path.join(scratch, "got"), "rb") as got:
                return got.read(limit)

    def read_small(self, path: str) -> bytes:
        return self._fetch(path, READ_LIMIT)

    def check_file(self, sample: SampleFile) -> None:
        result = self._run(sample.path, "--list-only")
        listed = _RSYNC_LISTED.match(result.stdout)
        if result.returncode != 0 or listed is None:
            raise self._failed(result)
        size, *stamp = (int(part) for part in listed.groups())
        check_mtime(calendar.timegm((*stamp, 0, 0, 0)), sample, "listed mtime")
        if size != sample.size:
            raise ProbeFindingError(Outcome.WRONG_SIZE, f"listed size {size}, manifest says {sample.size}")

    def download(self, sample: SampleFile) -> str:
        return hashlib.sha256(self._fetch(sample.path, sample.size + 1)).hexdigest()

    def check_missing(self, path: str) -> None:
        result = self._run(path, "--list-only")
        if result.returncode == 0:
            raise ProbeFindingError(Outcome.WRONG_STATUS, "a missing file was listed")
        if _RSYNC_MISSING not in result.stderr:
            expected = _RSYNC_MISSING.decode()
            raise ProbeFindingError(
                Outcome.WRONG_STATUS, f"a missing file got {self._said(result)!r}, not {expected!r}"
            )

    def close(self) -> None:
        """Nothing stays open between probes."""


def rsync_handshake(url: str, timeout: float) -> None:
    """Greet an rsync daemon and ask for the module; raises ProbeFindingError unless it is accepted."""
    parts = urlsplit(url)
    module = parts.path.strip("/").split("/")[0]
    with socket.create_connection((parts.hostname or "", parts.port or 873), timeout=timeout) as sock:
        stream = sock.makefile("rwb")
        greeting = stream.readline(256)
        if not greeting.startswith(b"@RSYNCD:"):
            raise ProbeFindingError(Outcome.BAD_CONTENT, f"not an rsync daemon (greeting {greeting[:40]!r})")
        stream.write(b"@RSYNCD: 30.0\n" + module.encode() + b"\n")
        stream.flush()
        for _ in range(200):  # the daemon may print a message of the day first
            line = stream.readline(1024)
            if not line:
                break
            if line.startswith(b"@RSYNCD: OK"):
                return
            if line.startswith(b"@RSYNCD: AUTHREQD"):
                raise ProbeFindingError(Outcome.WRONG_STATUS, f"module {module!r} requires authentication")
            if line.startswith(b"@ERROR"):
                raise ProbeFindingError(Outcome.WRONG_STATUS, line.decode(errors="replace").strip()[:120])
        raise ProbeFindingError(Outcome.BAD_CONTENT, f"module {module!r} was neither accepted nor refused")


# -- the driver ---------------------------------------------------------------------------------


class ServerSlots:
    """The connections this process may hold open to one server at once, whichever mirror's probes
    hold them: a host's mirrors are checked together against the same front ends, which cap the
    connections of one client address (serve-http and serve-ftp: 16)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[tuple[str, str], threading.BoundedSemaphore] = {}

    @contextmanager
    def hold(self, protocol: str, url: str, wanted: int) -> Iterator[int]:
        """Up to ``wanted`` slots: waits for the first, takes the others only if free (so two
        endpoint probes never wait on each other), and yields how many it got."""
        with self._lock:
            key = (protocol, urlsplit(url).netloc)
            slots = self._slots.setdefault(key, threading.BoundedSemaphore(wanted))
        slots.acquire()
        granted = 1
        while granted < wanted and slots.acquire(blocking=False):
            granted += 1
        try:
            yield granted
        finally:
            for _ in range(granted):
                slots.release()


SERVER_SLOTS = ServerSlots()

SESSIONS: dict[str, Callable[[str, float], Session]] = {"http": HttpSession, "ftp": FtpSession, "rsync": RsyncSession}


@contextmanager
def _timed(kind: ProbeKind, path: str, into: list[ProbeResult]) -> Iterator[None]:
    started = time.perf_counter()
    outcome, detail = Outcome.OK, ""
    try:
        yield
    except ProbeFindingError as exc:
        outcome, detail = exc.outcome, exc.detail
    except TimeoutError as exc:
        outcome, detail = Outcome.TIMEOUT, f"no answer in time ({exc})"
    except (ConnectionRefusedError, socket.gaierror, ConnectionResetError, BrokenPipeError, EOFError) as exc:
        outcome, detail = Outcome.UNREACHABLE, f"{type(exc).__name__}: {exc}"
    except (OSError, http.client.HTTPException, ftplib.Error, ValueError) as exc:
        outcome, detail = Outcome.ERROR, f"{type(exc).__name__}: {exc}"[:200]
    into.append(ProbeResult(kind, path, outcome, detail, round((time.perf_counter() - started) * 1000, 2)))


def probe_endpoint(
    protocol: str, url: str, sample: list[SampleFile], trace_path: str, timeout: float, concurrency: int
) -> EndpointReport:
    report = EndpointReport(protocol, url, probed_at=time.time())
    if protocol == "rsync" and shutil.which("rsync") is None:
        with _timed(ProbeKind.HANDSHAKE, "", report.results):
            rsync_handshake(url, timeout)
        return report
    open_session = SESSIONS[protocol]
    sessions: list[Session] = []
    local = threading.local()
    lock = threading.Lock()

    def session() -> Session:
        if getattr(local, "session", None) is None:
            local.session = open_session(url, timeout)
            with lock:
                sessions.append(local.session)
        found: Session = local.session
        return found

    def trace() -> None:
        body = session().read_small(trace_path)
        epoch = parse_trace_epoch(body)
        if epoch is None:
            raise ProbeFindingError(Outcome.BAD_CONTENT, "the trace file has no 'Epoch:' line")
        report.trace_epoch = epoch

    def check(item: SampleFile) -> None:
        session().check_file(item)

    def download(item: SampleFile) -> None:
        digest = session().download(item)
        if digest != item.sha256:
            raise ProbeFindingError(Outcome.WRONG_HASH, f"SHA-256 {digest[:16]}…, manifest says {item.sha256}")

    def run(kind: ProbeKind, path: str, probe: Callable[[], None]) -> list[ProbeResult]:
        found: list[ProbeResult] = []
        with _timed(kind, path, found):
            try:
                probe()
            except ProbeFindingError:
                raise
            except BaseException:
                local.session = None  # a broken connection is not reused
                raise
        return found

    work: list[tuple[ProbeKind, str, Callable[[], None]]] = [
        (ProbeKind.TRACE, trace_path, trace),
        (ProbeKind.MISSING, (gone := missing_path()), lambda: session().check_missing(gone)),
    ]
    work += [(ProbeKind.FILE, s.path, lambda s=s: check(s)) for s in sample]  # type: ignore[misc]
    work += [(ProbeKind.DOWNLOAD, s.path, lambda s=s: download(s)) for s in sample if s.download]  # type: ignore[misc]
    workers = min(concurrency, FTP_SESSIONS) if protocol == "ftp" else concurrency
    # Every connection is a pool thread's, so the slots held bound the connections open.
    with (
        SERVER_SLOTS.hold(protocol, url, max(workers, 1)) as granted,
        ThreadPoolExecutor(granted, thread_name_prefix=f"probe-{protocol}") as pool,
    ):
        try:
            report.results += pool.submit(run, ProbeKind.ROOT, "", lambda: session().root()).result()
            if report.reachable:
                for found in pool.map(lambda item: run(*item), work):
                    report.results.extend(found)
        finally:
            for opened in sessions:
                opened.close()
    return report


def probe_all(
    endpoints: dict[str, str],
    sample: list[SampleFile],
    trace_path: str,
    timeout: float,
    concurrency: int,
) -> list[EndpointReport]:
    """Every endpoint at once (one slow protocol does not delay the others' verdicts)."""
    with ThreadPoolExecutor(max(len(endpoints), 1), thread_name_prefix="endpoint") as pool:
        futures = [
            pool.submit(probe_endpoint, protocol, url, sample, trace_path, timeout, concurrency)
            for protocol, url in endpoints.items()
        ]
        return [future.result() for future in futures]
