"""The HeyGem / Duix.Avatar gen-video protocol, as its clients and users have found it to be.

Two routes on port 8383, JSON, no authentication:

* ``POST /easy/submit`` ``{"audio_url", "video_url", "code", "chaofen": 0, "watermark_switch": 0, "pn": 1}``
  -- paths as the *container* sees them (the host's data folder is mounted at ``/code/data``);
* ``GET /easy/query?code=KEY``.

Every answer is HTTP 200 with ``{"code", "success", "msg", "data"}``; ``success`` lies (it is
true for "busy" and "no such task"), so only ``code`` is read: 10000 ok, 10001 busy (the
submit was dropped: the server renders one task at a time), 10002 bad parameters, 10003
failure, 10004 no such task (also the cheap health probe), 9999 internal error. A query's
``data.status`` is 1 running, 2 done, 3 failed; ``progress`` is 0..100 or, in some builds,
a 0..1 fraction; ``result`` is the output's path relative to the data folder, sometimes
without its ``temp/`` folder. A terminal answer is given once: the next query says 10004.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lipsync.errors import LipsyncError, RendererBusyError, RendererUnreachableError

OK, BUSY, BAD_PARAMETERS, FAILURE, NO_SUCH_TASK, INTERNAL = 10000, 10001, 10002, 10003, 10004, 9999
RUNNING, DONE, FAILED = 1, 2, 3


class RemoteRenderFailed(LipsyncError):
    """The server says the task failed (status 3, or a refusal that retrying cannot fix)."""

    code = "render_failed_remote"


class TaskUnknown(Exception):
    """10004: the server has no task of that code (it forgot a finished one, or restarted)."""


@dataclass(frozen=True)
class TaskState:
    status: int  # RUNNING, DONE or FAILED
    progress: float  # 0..1
    msg: str
    result: str | None  # relative to the data folder, as the server says it


@dataclass(frozen=True)
class Server:
    """One gen-video service and the folder it shares with us."""

    url: str  # http://gpu-01:8383
    host_dir: str  # the data folder as this host sees it
    container_dir: str = "/code/data"  # the same folder as the container sees it

    @property
    def name(self) -> str:
        return urllib.parse.urlsplit(self.url).netloc or self.url


def _progress(value: object) -> float:
    try:
        p = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    if p != p or p <= 0:
        return 0.0
    return min(1.0, p if p < 1 else p / 100.0)  # 0 < p < 1 is a fraction, else a percentage


class Client:
    """Talks to one server; every network trouble is a :class:`RendererUnreachableError`."""

    def __init__(self, server: Server, *, timeout: float = 10.0) -> None:
        self.server = server
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        url = self.server.url.rstrip("/") + path
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method,
                                         headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                answer = json.loads(resp.read() or b"{}")
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise RendererUnreachableError(f"HeyGem server {self.server.name} did not answer: "
                                           f"{getattr(e, 'reason', e)}") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("code"), int):
            raise RendererUnreachableError(f"HeyGem server {self.server.name} answered something that is not "
                                           "its protocol")
        return answer

    def submit(self, code: str, audio: PurePosixPath, video: PurePosixPath) -> None:
        """Start a task (paths as the container sees them)."""
        answer = self._call("POST", "/easy/submit", {"audio_url": str(audio), "video_url": str(video), "code": code,
                                                     "chaofen": 0, "watermark_switch": 0, "pn": 1})
        status = answer["code"]
        if status == OK:
            return
        msg = str(answer.get("msg") or "")
        if status == BUSY:
            raise RendererBusyError(f"HeyGem server {self.server.name} is busy with another task")
        if status in (BAD_PARAMETERS, FAILURE):
            raise RemoteRenderFailed(f"HeyGem server {self.server.name} refused the task ({status}): {msg}")
        raise RendererUnreachableError(f"HeyGem server {self.server.name} failed to take the task ({status}): {msg}")

    def query(self, code: str) -> TaskState:
        answer = self._call("GET", "/easy/query?" + urllib.parse.urlencode({"code": code}))
        status = answer["code"]
        if status == NO_SUCH_TASK:
            raise TaskUnknown(code)
        if status != OK or not isinstance(answer.get("data"), dict):
            raise RendererUnreachableError(f"HeyGem server {self.server.name} could not say how task {code} "
                                           f"goes ({status}): {answer.get('msg') or ''}")
        data = answer["data"]
        result = data.get("result")
        return TaskState(status=int(data.get("status") or RUNNING), progress=_progress(data.get("progress")),
                         msg=str(data.get("msg") or ""), result=str(result) if result else None)

    def probe(self) -> bool:
        """True when the server answers its protocol (a query of an unknown task: 10004)."""
        try:
            self.query(f"lipsyncd-probe-{secrets.token_hex(6)}")
        except TaskUnknown:
            return True
        except RendererUnreachableError:
            return False
        return True


def check_server(server: Server, *, timeout: float = 5.0) -> list[tuple[bool, str]]:
    """What ``lipsyncd doctor`` says of one server: (ok, sentence) for its answer and its folder."""
    if Client(server, timeout=timeout).probe():
        out = [(True, f"{server.url} answers the gen-video protocol")]
    else:
        out = [(False, f"{server.url} does not answer (or not the gen-video protocol)")]
    folder = Path(server.host_dir)
    probe = folder / f".lipsyncd-probe-{secrets.token_hex(4)}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
        out.append((True, f"{folder} is writable (the container sees it as {server.container_dir})"))
    except OSError as e:
        out.append((False, f"{folder} is not writable from here: {e.strerror or e} (is the folder the server "
                           "mounts shared with this host?)"))
    return out
