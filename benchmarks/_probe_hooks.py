"""gunicorn config (``-c``) of ``probe_gunicorn.py``: measures inside a live sync worker, per request.

- thread CPU from ``pre_request`` to ``post_request`` (the request) and from ``post_request`` to the next
  ``pre_request`` (accept, parse, close: gunicorn's own work), for the requests not traced;
- bytecodes per request by file, under ``sys.settrace`` with opcode events, for ``PROBE_TRACED`` requests after
  the first ``PROBE_WARMUP`` (exact, like ``count_opcodes.py``, but in the real server);
- garbage collections per generation (``gc.callbacks``).

Written as JSON to ``PROBE_OUT`` when the worker exits.
"""

from __future__ import annotations

import collections
import gc
import json
import os
import re
import sys
import time
from types import FrameType
from typing import Any

_WARMUP = int(os.environ.get("PROBE_WARMUP", "300"))
_TRACED = int(os.environ.get("PROBE_TRACED", "20"))
_state: dict[str, Any] = {"n": 0, "timed": 0, "in_ns": 0, "between_ns": 0, "gc": [0, 0, 0], "last_post": None}
_opcodes: collections.Counter[str] = collections.Counter()
_pre = [0]


def _short(filename: str) -> str:
    """The path from the package on: ``flask/app.py``, ``obskit/_stages.py``, ``json/decoder.py``."""
    for marker in ("site-packages/", "/src/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    short = re.sub(r"^.*/lib/python3\.\d+/", "", filename)
    return os.path.basename(short) if short.startswith("/") else short  # the app's own modules by name


def _tracer(frame: FrameType, event: str, arg: Any) -> Any:
    key = _short(frame.f_code.co_filename)
    frame.f_trace_opcodes = True

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode":
            _opcodes[key] += 1
        return local

    return local


def _tracing() -> bool:
    return bool(_WARMUP < _state["n"] <= _WARMUP + _TRACED)


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop":
        _state["gc"][info["generation"]] += 1


def post_worker_init(worker: Any) -> None:
    gc.callbacks.append(_on_gc)


def pre_request(worker: Any, req: Any) -> None:
    now = time.thread_time_ns()
    _state["n"] += 1
    if _tracing():
        _state["last_post"] = None
        sys.settrace(_tracer)
        return
    if _state["last_post"] is not None:
        _state["between_ns"] += now - _state["last_post"]
    _pre[0] = now


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    if _tracing():
        sys.settrace(None)
        return
    now = time.thread_time_ns()
    _state["timed"] += 1
    _state["in_ns"] += now - _pre[0]
    _state["last_post"] = now


def worker_exit(server: Any, worker: Any) -> None:
    timed = max(_state["timed"], 1)
    out = {
        "requests": _state["n"],
        "in_request_us": _state["in_ns"] / timed / 1000,
        "between_us": _state["between_ns"] / timed / 1000,
        "gc_per_1000": [g * 1000 / max(_state["n"], 1) for g in _state["gc"]],
        "bytecodes": {k: v / _TRACED for k, v in _opcodes.items()} if _state["n"] > _WARMUP + _TRACED else {},
    }
    with open(os.environ["PROBE_OUT"], "w") as f:
        json.dump(out, f)
