"""A stand-in for a HeyGem / Duix.Avatar gen-video server -- the project's own, for tests.

The real service is a closed Docker image (about 70 GB, an NVIDIA GPU) that cannot run on
the machines the tests run on. This stand-in reproduces its interface as documented in the
protocol notes the project keeps with its test data: the two routes, the
``{code, success, msg, data}`` envelope whose ``success`` lies, one task at a time with
10001 refusals, tasks forgotten after their first terminal answer, progress as 0..100 or
0..1, the ``result`` path with or without ``temp/``, stalls at a fixed percentage, status 3
with a Chinese message, restarts that lose the running task, slow answers. It is a real
HTTP server on a free port, and it really renders: with the project's own warp engine
(lip-synced) or the passthrough engine, into ``temp/<code>-r.mp4`` of its data folder.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from lipsync.engine import RenderOptions
from lipsync.engines import create_engine
from lipsync.render import render

CONTAINER_DIR = "/code/data"


@dataclass
class Behaviour:
    engine: str = "passthrough"  # "warp" renders a real lip-synced video
    progress_style: str = "percent"  # or "fraction"
    result_style: str = "temp"  # "temp": temp/<code>-r.mp4; "bare": <code>-r.mp4 (the file is in temp/); "none"
    stall_at: float | None = None  # stop making progress at this fraction (the next task only, then cleared)
    fail_with: str | None = None  # status 3 with this message (the next task only, then cleared)
    min_seconds: float = 0.0  # a task lasts at least this long (so concurrency shows)
    answer_delay: float = 0.0  # every HTTP answer waits this long
    prerendered: Path | None = None  # "render" by copying this video (benchmarks: lipsyncd's own cost alone)


@dataclass
class Task:
    code: str
    audio: Path
    video: Path
    progress: float = 0.0
    status: int = 1
    msg: str = "合成中"
    result: Path | None = None


@dataclass
class StandInServer:
    data_dir: Path
    behaviour: Behaviour = field(default_factory=Behaviour)

    def __post_init__(self) -> None:
        (self.data_dir / "temp").mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.tasks: dict[str, Task] = {}
        self.running: Task | None = None
        self.accepted: list[str] = []  # task codes, in order
        self.busy_answers = 0
        self.max_running = 0
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StandInServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server._answer(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                server._answer(self, "POST")

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Down: connections are refused (the port stays reserved for restart())."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def restart(self) -> None:
        """What a container restart does: running and finished tasks are forgotten."""
        self.stop()
        with self.lock:
            self.tasks.clear()
            if self.running is not None:
                self.running.status = -1  # its render thread stops reporting
            self.running = None
        self.start()

    # ------------------------------------------------------------------ protocol

    def _answer(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        time.sleep(self.behaviour.answer_delay)
        parsed = urllib.parse.urlsplit(handler.path)
        if method == "POST" and parsed.path == "/easy/submit":
            length = int(handler.headers.get("Content-Length") or 0)
            body = json.loads(handler.rfile.read(length) or b"{}")
            envelope = self._submit(body)
        elif method == "GET" and parsed.path == "/easy/query":
            envelope = self._query(urllib.parse.parse_qs(parsed.query).get("code", [""])[0])
        else:
            handler.send_error(404)
            return
        data = json.dumps(envelope, ensure_ascii=False).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _host_path(self, container_path: str) -> Path:
        relative = str(container_path).removeprefix(CONTAINER_DIR).lstrip("/")
        return self.data_dir / relative

    def _submit(self, body: dict) -> dict:
        with self.lock:
            if self.running is not None:
                self.busy_answers += 1
                return {"code": 10001, "success": True, "msg": "忙碌中", "data": None}
            audio, video = self._host_path(body.get("audio_url", "")), self._host_path(body.get("video_url", ""))
            if not audio.is_file() or not video.is_file():
                return {"code": 10002, "success": False, "msg": "参数错误: 文件不存在", "data": None}
            task = Task(body["code"], audio, video)
            self.tasks[task.code] = task
            self.running = task
            self.accepted.append(task.code)
            self.max_running = max(self.max_running, 1)
        threading.Thread(target=self._work, args=(task,), daemon=True).start()
        return {"code": 10000, "success": True, "msg": "成功", "data": None}

    def _query(self, code: str) -> dict:
        with self.lock:
            task = self.tasks.get(code)
            if task is None:
                return {"code": 10004, "success": True, "msg": "任务不存在", "data": None}
            progress = task.progress * 100 if self.behaviour.progress_style == "percent" else task.progress
            data = {"code": code, "status": task.status, "progress": round(progress, 3), "msg": task.msg}
            if task.status == 2 and task.result is not None and self.behaviour.result_style != "none":
                relative = task.result.relative_to(self.data_dir).as_posix()
                data["result"] = relative if self.behaviour.result_style == "temp" else task.result.name
            if task.status in (2, 3):
                del self.tasks[code]  # a terminal answer is given once
            return {"code": 10000, "success": True, "msg": "成功", "data": data}

    # ------------------------------------------------------------------ the "GPU"

    def _work(self, task: Task) -> None:
        b = self.behaviour
        started = time.monotonic()
        out = self.data_dir / "temp" / f"{task.code}-r.mp4"
        stall, fail = b.stall_at, b.fail_with
        b.stall_at = b.fail_with = None

        def progress(f: float) -> None:
            with self.lock:
                task.progress = min(f, stall) if stall is not None else f
        try:
            if b.prerendered is not None:
                shutil.copyfile(b.prerendered, out)
                progress(1.0)
            else:
                render(task.audio, task.video, out, engine=create_engine(b.engine, device="cpu"),
                       options=RenderOptions(device="cpu", preset="ultrafast", crf=30), progress=progress)
            while time.monotonic() - started < b.min_seconds:
                time.sleep(0.05)
            if stall is not None:
                while task.status == 1:  # stuck at that percentage, forever, without an error
                    time.sleep(0.1)
                return
        except Exception as e:  # noqa: BLE001 - reported through the protocol, as the real one does
            fail = fail or f"合成失败: {e}"
        with self.lock:
            if task.status == -1:
                return  # lost in a restart
            if fail is not None:
                task.status, task.msg = 3, fail
                out.unlink(missing_ok=True)
            else:
                task.status, task.progress, task.msg, task.result = 2, 1.0, "完成", out
            if self.running is task:
                self.running = None


class TtsStandIn:
    """A stand-in (ours, not HeyGem's code) for the deployment's TTS service, faithful to the
    protocol in the project's notes: ``POST /v1/invoke`` with a JSON body (speaker, text,
    format "wav" and fixed sampling fields) answered with the WAV's bytes. It "speaks" a
    formant-synthesised vowel per word, so the audio's length follows the text; an unknown
    speaker gets a 400, as a voice that was never trained does."""

    def __init__(self, speakers: tuple[str, ...] = ("anna",)):
        self.speakers = speakers
        self.requests: list[dict] = []
        self._server = None

    def start(self) -> "TtsStandIn":
        import io
        import threading
        import wave
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from tests.media_factory import formant_vowel

        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                stand_in.requests.append(body)
                if self.path != "/v1/invoke" or body.get("format") != "wav":
                    return self._send(404, b"not found", "text/plain")
                if body.get("speaker") not in stand_in.speakers:
                    return self._send(400, b'{"detail": "speaker not found"}', "application/json")
                words = max(1, len(str(body.get("text", "")).split()))
                pcm = np.concatenate([formant_vowel("aiu"[k % 3], 0.3) for k in range(words)])
                out = io.BytesIO()
                with wave.open(out, "wb") as w:
                    w.setnchannels(1)
                    w.setsampwidth(2)
                    w.setframerate(16000)
                    w.writeframes((pcm * 32767).astype("<i2").tobytes())
                self._send(200, out.getvalue(), "audio/wav")

            def _send(self, code: int, data: bytes, kind: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True, name="tts-stand-in").start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
