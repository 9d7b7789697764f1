from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import traceback
import typing
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider, sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import obskit
from obskit import _guard, _producer, _safety, _semconv, _stages, metrics, testing
from obskit._setup import make_tracer_provider
from obskit._stages import inference, postprocess, preprocess, set_batch_size, stage
from obskit.exceptions import ObskitWarning

BASE = {"model.name": "fraud-xgb", "model.version": "3"}


@dataclass
class Telemetry:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    @property
    def tracer(self) -> trace.Tracer:
        return self.tracer_provider.get_tracer("test")

    def bind(self, *, model_name: str | None = None, model_version: str | None = None, traces: bool = True) -> None:
        _stages.bind(
            self.tracer_provider.get_tracer("obskit"),
            self.meter_provider.get_meter("obskit"),
            model_name=model_name,
            model_version=model_version,
            traces_enabled=traces,
        )

    def spans(self) -> list[ReadableSpan]:
        """Finished stage spans (the tests' own parent spans come from another tracer and are left out)."""
        return [
            s
            for s in self.exporter.get_finished_spans()
            if s.instrumentation_scope is not None and s.instrumentation_scope.name == "obskit"
        ]

    def span(self, name: str) -> ReadableSpan:
        matching = [s for s in self.spans() if s.name == name]
        assert len(matching) == 1, [s.name for s in self.spans()]
        return matching[0]

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        if data is None:
            return []
        return [
            point
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == metric
            for point in m.data.data_points
        ]

    def point(self, metric: str, **attributes: str) -> Any:
        matching = [p for p in self.points(metric) if dict(p.attributes) == attributes]
        assert len(matching) == 1, [dict(p.attributes) for p in self.points(metric)]
        return matching[0]


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    exporter = InMemorySpanExporter()
    # The provider init() builds (lean spans, guarded processors, redaction), exporting to memory.
    tracer_provider = make_tracer_provider(Resource.get_empty(), sampling.DEFAULT_ON, capture_query=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    _producer.attach(reader, _stages.current_registry, Resource.get_empty())  # as init() does
    meter_provider = MeterProvider(metric_readers=[reader])
    previous = _safety.set_reraise(True)
    t = Telemetry(exporter, reader, tracer_provider, meter_provider)
    t.bind()
    try:
        yield t
    finally:
        _stages.unbind()
        _safety.set_reraise(previous)
        tracer_provider.shutdown()
        meter_provider.shutdown()


def attrs(stage_name: str, name: str = "fraud-xgb", version: str = "3", **extra: Any) -> dict[str, Any]:
    """The attributes of a stage call; ``extra`` for ``error.type`` or ``model.batch_size``."""
    return {"model.name": name, "model.version": version, "model.stage": stage_name, **extra}


# --- spans -----------------------------------------------------------------------------------------------


def test_span_name_attributes_and_parent(telemetry: Telemetry) -> None:
    """A decorated call is an INTERNAL child of the current span named '{stage} {model}' with the model attributes."""

    @inference(model="fraud-xgb", version="3")
    def predict(x: int) -> int:
        return x * 2

    with telemetry.tracer.start_as_current_span("POST /predict") as parent:
        assert predict(21) == 42
        assert trace.get_current_span() is parent

    span = telemetry.span("inference fraud-xgb")
    assert span.kind is SpanKind.INTERNAL
    assert dict(span.attributes or {}) == attrs("inference")
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.context.trace_id == parent.get_span_context().trace_id
    assert span.status.status_code is StatusCode.UNSET
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "obskit"


def test_pipeline_stages_are_siblings_and_nested_stages_children(telemetry: Telemetry) -> None:
    """preprocess/inference/postprocess under one parent are siblings; a stage called inside another is its child."""

    @preprocess(model="fraud-xgb", version="3")
    def featurize(payload: dict[str, int]) -> list[int]:
        return tokenize(list(payload.values()))

    @stage("tokenize", model="fraud-xgb", version="3")
    def tokenize(values: list[int]) -> list[int]:
        return sorted(values)

    @inference(model="fraud-xgb", version="3")
    def predict(features: list[int]) -> float:
        return sum(features) / len(features)

    @postprocess(model="fraud-xgb", version="3")
    def to_response(score: float) -> dict[str, float]:
        return {"score": score}

    with telemetry.tracer.start_as_current_span("request") as parent:
        assert to_response(predict(featurize({"a": 2, "b": 1}))) == {"score": 1.5}

    parent_id = parent.get_span_context().span_id
    by_name = {s.name: s for s in telemetry.spans()}
    assert sorted(by_name) == [
        "inference fraud-xgb",
        "postprocess fraud-xgb",
        "preprocess fraud-xgb",
        "tokenize fraud-xgb",
    ]
    for name in ("preprocess fraud-xgb", "inference fraud-xgb", "postprocess fraud-xgb"):
        span_parent = by_name[name].parent
        assert span_parent is not None
        assert span_parent.span_id == parent_id
    tokenize_parent = by_name["tokenize fraud-xgb"].parent
    assert tokenize_parent is not None
    assert tokenize_parent.span_id == by_name["preprocess fraud-xgb"].context.span_id
    assert by_name["tokenize fraud-xgb"].attributes is not None
    assert by_name["tokenize fraud-xgb"].attributes["model.stage"] == "tokenize"


def test_bare_decorators_default_to_function_name_and_unknown_version(telemetry: Telemetry) -> None:
    """Used bare, a stage is named after the function and its version is 'unknown'."""

    @preprocess
    def featurize(x: int) -> int:
        return x

    @inference
    def predict(x: int) -> int:
        return x

    @postprocess
    def respond(x: int) -> int:
        return x

    assert respond(predict(featurize(1))) == 1
    assert sorted(s.name for s in telemetry.spans()) == [
        "inference predict",
        "postprocess respond",
        "preprocess featurize",
    ]
    assert dict(telemetry.span("inference predict").attributes or {}) == attrs("inference", "predict", "unknown")


def test_defaults_come_from_bind_and_explicit_arguments_win(telemetry: Telemetry) -> None:
    """OBSKIT_MODEL_NAME/VERSION (passed to bind) replace the function-name defaults; decorator arguments win."""

    @inference
    def predict(x: int) -> int:
        return x

    @inference(version="9")
    def predict_v9(x: int) -> int:
        return x

    @inference(model="other")
    def predict_other(x: int) -> int:
        return x

    telemetry.bind(model_name="iris", model_version="7")
    predict(1)
    predict_v9(1)
    predict_other(1)
    assert [(s.name, dict(s.attributes or {})) for s in telemetry.spans()] == [
        ("inference iris", attrs("inference", "iris", "7")),
        ("inference iris", attrs("inference", "iris", "9")),
        ("inference other", attrs("inference", "other", "7")),
    ]


def test_rebinding_recomputes_cached_names(telemetry: Telemetry) -> None:
    """A function called under one binding picks up the defaults of the next one."""

    @inference
    def predict(x: int) -> int:
        return x

    predict(1)
    telemetry.bind(model_name="iris")
    predict(1)
    assert [s.name for s in telemetry.spans()] == ["inference predict", "inference iris"]


# --- callable kinds --------------------------------------------------------------------------------------


class Model:
    """Methods of every kind, decorated."""

    factor = 10

    def __init__(self) -> None:
        self.calls = 0

    @inference(model="fraud-xgb", version="3", batch_size=lambda rows: len(rows))
    def predict(self, rows: list[int]) -> list[int]:
        self.calls += 1
        return [r * self.factor for r in rows]

    @classmethod
    @preprocess(model="fraud-xgb", version="3")
    def load(cls, path: str) -> str:
        return f"{cls.__name__}:{path}"

    @inference(model="fraud-xgb", version="3")  # above @classmethod
    @classmethod
    def scale(cls, x: int) -> int:
        return x * cls.factor

    @staticmethod
    @postprocess(model="fraud-xgb", version="3")
    def respond(x: int) -> dict[str, int]:
        return {"y": x}

    @postprocess(model="fraud-xgb", version="3")  # above @staticmethod
    @staticmethod
    def respond_too(x: int) -> int:
        return -x


def test_methods_of_every_kind(telemetry: Telemetry) -> None:
    """Instance, class and static methods work with the decorator below or above @classmethod/@staticmethod."""
    model = Model()
    assert model.predict([1, 2]) == [10, 20]
    assert Model.predict(model, [3]) == [30]
    assert model.calls == 2
    assert Model.load("m.bin") == "Model:m.bin"
    assert model.load("m.bin") == "Model:m.bin"
    assert Model.scale(2) == 20
    assert model.scale(3) == 30
    assert Model.respond(5) == {"y": 5}
    assert model.respond(6) == {"y": 6}
    assert Model.respond_too(5) == -5

    spans = telemetry.spans()
    assert [s.name for s in spans] == [
        "inference fraud-xgb",
        "inference fraud-xgb",
        "preprocess fraud-xgb",
        "preprocess fraud-xgb",
        "inference fraud-xgb",
        "inference fraud-xgb",
        "postprocess fraud-xgb",
        "postprocess fraud-xgb",
        "postprocess fraud-xgb",
    ]
    # The batch_size callable sees the call's arguments without self, however the method was called.
    assert [s.attributes["model.batch_size"] for s in spans[:2]] == [2, 1]  # type: ignore[index]


def test_methods_metrics_only(telemetry: Telemetry) -> None:
    """A method's metrics-only calls (wrapt's path, not a plain function's) record durations and batch sizes."""
    telemetry.bind(traces=False)
    model = Model()
    assert [model.predict([1] * n) for n in (1, 2, 3)] == [[10], [10] * 2, [10] * 3]
    assert model.scale(3) == 30
    assert telemetry.spans() == []
    assert telemetry.point(_semconv.MODEL_DURATION, **attrs("inference")).count == 4
    sizes = telemetry.point(_semconv.MODEL_BATCH_SIZE, **attrs("inference"))
    assert (sizes.count, sizes.sum) == (3, 6)
    assert telemetry.point(_semconv.MODEL_ACTIVE, **attrs("inference")).value == 0


def test_async_function(telemetry: Telemetry) -> None:
    """An async stage's span covers the awaited execution and is current inside it."""
    seen: list[trace.Span] = []

    @inference(model="fraud-xgb", version="3")
    async def predict(x: int) -> int:
        seen.append(trace.get_current_span())
        await asyncio.sleep(0)
        seen.append(trace.get_current_span())
        return x + 1

    assert inspect.iscoroutinefunction(predict)

    async def main() -> int:
        with telemetry.tracer.start_as_current_span("request"):
            coro = predict(1)
            assert telemetry.spans() == []  # not started before it is awaited
            return await coro

    assert asyncio.run(main()) == 2
    span = telemetry.span("inference fraud-xgb")
    assert dict(span.attributes or {}) == attrs("inference")
    assert [s.get_span_context().span_id for s in seen] == [span.context.span_id] * 2
    assert span.parent is not None


def test_async_stages_in_concurrent_tasks_keep_their_own_parents(telemetry: Telemetry) -> None:
    """Concurrent async calls in separate tasks each get their own parent and do not mix contexts."""

    @inference(model="fraud-xgb", version="3")
    async def predict(x: int) -> int:
        await asyncio.sleep(0)
        return x

    async def request(i: int) -> tuple[int, int]:
        with telemetry.tracer.start_as_current_span(f"request {i}") as parent:
            await predict(i)
            return i, parent.get_span_context().span_id

    async def main() -> list[tuple[int, int]]:
        return await asyncio.gather(*(request(i) for i in range(5)))

    parents = {span_id for _, span_id in asyncio.run(main())}
    stage_parents = {s.parent.span_id for s in telemetry.spans() if s.name == "inference fraud-xgb" and s.parent}
    assert stage_parents == parents
    assert len(stage_parents) == 5


def test_generator_exhausted(telemetry: Telemetry) -> None:
    """A generator stage's span spans the whole stream, is current only while the generator runs, and ends at exhaustion."""
    inside: list[int] = []

    @inference(model="fraud-xgb", version="3")
    def stream(n: int) -> Iterator[int]:
        for i in range(n):
            inside.append(trace.get_current_span().get_span_context().span_id)
            yield i

    assert inspect.isgeneratorfunction(stream)
    with telemetry.tracer.start_as_current_span("request") as parent:
        outside = []
        for _item in stream(3):
            assert telemetry.spans() == []  # still open
            outside.append(trace.get_current_span())
    span = telemetry.span("inference fraud-xgb")
    assert inside == [span.context.span_id] * 3
    assert outside == [parent] * 3
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.status.status_code is StatusCode.UNSET
    assert telemetry.point(_semconv.MODEL_DURATION, **attrs("inference")).count == 1
    assert telemetry.point(_semconv.MODEL_TIME_TO_FIRST_OUTPUT, **attrs("inference")).count == 1
    assert telemetry.point(_semconv.MODEL_ACTIVE, **attrs("inference")).value == 0


def test_generator_timing_starts_at_the_call(telemetry: Telemetry) -> None:
    """A stream's span starts at the call even though it is opened at the first next(); TTFO <= duration."""

    @inference(model="fraud-xgb", version="3")
    def stream() -> Iterator[int]:
        yield 1
        yield 2

    gen = stream()
    assert telemetry.points(_semconv.MODEL_ACTIVE) == []  # nothing happens before iteration begins
    first = next(gen)
    active = telemetry.point(_semconv.MODEL_ACTIVE, **attrs("inference")).value
    rest = list(gen)
    assert (first, rest, active) == (1, [2], 1)
    span = telemetry.span("inference fraud-xgb")
    assert span.start_time is not None
    assert span.end_time is not None
    assert span.start_time < span.end_time
    duration = telemetry.point(_semconv.MODEL_DURATION, **attrs("inference"))
    ttfo = telemetry.point(_semconv.MODEL_TIME_TO_FIRST_OUTPUT, **attrs("inference"))
    assert 0 < ttfo.sum <= duration.sum
    assert list(ttfo.explicit_bounds) == list(_semconv.MODEL_DURATION_BUCKETS)


def test_generator_never_iterated_records_nothing(telemetry: Telemetry) -> None:
    """A generator that is created but never iterated opens no span and counts nothing."""

    @inference(model="fraud-xgb", version="3")
    def stream() -> Generator[int, None, None]:
        yield 1

    gen = stream()
    gen.close()
    del gen
    assert telemetry.spans() == []
    assert telemetry.points(_semconv.MODEL_DURATION) == []


def test_generator_closed_early(telemetry: Telemetry) -> None:
    """Closing a stream early ends its span without error and closes the user's generator."""
    cleaned_up: list[int] = []

    @inference(model="fraud-xgb", version="3")
    def stream() -> Generator[int, None, None]:
        try:
            yield 1
            yield 2
        finally:
            cleaned_up.append(trace.get_current_span().get_span_context().span_id)

    gen = stream()
    assert next(gen) == 1
    gen.close()
    span = telemetry.span("inference fraud-xgb")
    assert cleaned_up == [span.context.span_id]  # the user's finally ran inside the stage span
    assert span.status.status_code is StatusCode.UNSET
    assert telemetry.point(_semconv.MODEL_DURATION, **attrs("inference")).count == 1
    assert telemetry.point(_semconv.MODEL_ACTIVE, **attrs("inference")).value == 0


def test_generator_raising(telemetry: Telemetry) -> None:
    """A stream that raises ends its span with ERROR and the very same exception reaches the consumer."""
    original = ValueError("bad chunk")

    @inference(model="fraud-xgb", version="3")
    def stream() -> Iterator[int]:
        yield 1
        raise original

    gen = stream()
    assert next(gen) == 1
    with pytest.raises(ValueError, match="bad chunk") as info:
        next(gen)
    assert info.value is original
    assert traceback.extract_tb(info.value.__traceback__)[-1].name == "stream"
    span = telemetry.span("inference fraud-xgb")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "ValueError"
    assert telemetry.point(_semconv.MODEL_DURATION, **attrs("inference"), **{"error.type": "ValueError"}).count == 1
    assert telemetry.point(_semconv.MODEL_TIME_TO_FIRST_OUTPUT, **attrs("inference")).count == 1


def test_generator_send_throw_and_return_value_pass_through(telemetry: Telemetry) -> None:
    """send(), throw() and the generator's return value reach the user's generator unchanged."""

    @inference(model="fraud-xgb", version="3")
    def echo() -> typing.Generator[str, str, str]:
        received = yield "ready"
        try:
            yield f"got {received}"
        except KeyError as exc:
            yield f"caught {exc.args[0]}"
        return "done"

    def consume() -> typing.Generator[str, str, str]:
        return (yield from echo())

    gen = echo()
    assert next(gen) == "ready"
    assert gen.send("x") == "got x"
    assert gen.throw(KeyError("k")) == "caught k"
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value == "done"
    assert list(consume()) == ["ready", "got None"]
    assert [s.status.status_code for s in telemetry.spans()] == [StatusCode.UNSET, StatusCode.UNSET]


def test_generator_uncaught_throw_is_an_error(telemetry: Telemetry) -> None:
    """An exception thrown into a stream and not handled there propagates as the same object and marks the span."""
    thrown = RuntimeError("consumer gave up")

    @inference(model="fraud-xgb", version="3")
    def stream() -> Generator[int, None, None]:
        yield 1

    gen = stream()
    next(gen)
    with pytest.raises(RuntimeError) as info:
        gen.throw(thrown)
    assert info.value is thrown
    assert telemetry.span("inference fraud-xgb").status.status_code is StatusCode.ERROR


def test_async_generator(telemetry: Telemetry) -> None:
    """An async generator stage works like a generator stage: span over the stream, TTFO, span current inside only."""
    inside: list[int] = []

    @inference(model="fraud-xgb", version="3")
    async def stream(n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0)
            inside.append(trace.get_current_span().get_span_context().span_id)
            yield i

    assert inspect.isasyncgenfunction(stream)

    async def main() -> list[int]:
        with telemetry.tracer.start_as_current_span("request") as parent:
            items = []
            async for item in stream(3):
                assert trace.get_current_span() is parent
                items.append(item)
            return items

    assert asyncio.run(main()) == [0, 1, 2]
    span = telemetry.span("inference fraud-xgb")
    assert inside == [span.context.span_id] * 3
    assert span.parent is not None
    assert telemetry.point(_semconv.MODEL_TIME_TO_FIRST_OUTPUT, **attrs("inference")).count == 1
    assert telemetry.point(_semconv.MODEL_ACTIVE, **attrs("inference")).value == 0


def test_async_generator_closed_early_and_raising(telemetry: Telemetry) -> None:
    """aclose() ends an async stream without error; a raising async stream marks ERROR with the same exception."""
    original = OSError("upstream closed")
    closed: list[bool] = []

    @inference(model="early", version="3")
    async def endless() -> AsyncGenerator[int, None]:
        try:
            while True:
                yield 1
        finally:
            closed.append(True)

    @inference(model="broken", version="3")
    async def broken() -> AsyncIterator[int]:
        yield 1
        raise original

    async def main() -> BaseException:
        agen = endless()
        assert await agen.__anext__() == 1
        await agen.aclose()
        with pytest.raises(OSError, match="upstream closed") as info:
            async for _ in broken():
                pass
        return info.value

    assert asyncio.run(main()) is original
    assert closed == [True]
    assert telemetry.span("inference early").status.status_code is StatusCode.UNSET
    failed = telemetry.span("inference broken")
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None
    assert failed.attributes["error.type"] == "OSError"


def test_time_to_first_output_only_for_streams(telemetry: Telemetry) -> None:
    """Plain and async calls record no time to first output; streams do, once per stream."""

    @inference(model="plain", version="3")
    def plain() -> list[int]:
        return [1, 2]

    @inference(model="coro", version="3")
    async def coro() -> list[int]:
        return [1, 2]

    @inference(model="gen", version="3")
    def gen() -> Iterator[int]:
        yield from [1, 2, 3]

    plain()
    asyncio.run(coro())
    list(gen())
    list(gen())
    ttfo = telemetry.points(_semconv.MODEL_TIME_TO_FIRST_OUTPUT)
    assert [(p.attributes["model.name"], p.count) for p in ttfo] == [("gen", 2)]
    assert len(telemetry.points(_semconv.MODEL_DURATION)) == 3


def test_generator_yielding_nothing_records_no_first_output(telemetry: Telemetry) -> None:
    """An empty stream records its duration but no time to first output."""

    @inference(model="fraud-xgb", version="3")
    def empty() -> Iterator[int]:
        yield from ()

    assert list(empty()) == []
    assert telemetry.point(_semconv.MODEL_DURATION, **attrs("inference")).count == 1
    assert telemetry.points(_semconv.MODEL_TIME_TO_FIRST_OUTPUT) == []


# --- batch size ------------------------------------------------------------------------------------------


def test_batch_size_int(telemetry: Telemetry) -> None:
    """A fixed batch size is a span attribute and a histogram measurement, without being a metric label."""

    @inference(model="fraud-xgb", version="3", batch_size=32)
    def predict(rows: list[int]) -> int:
        return len(rows)

    predict([1])
    predict([2])
    span = telemetry.spans()[0]
    assert dict(span.attributes or {}) == {**attrs("inference"), "model.batch_size": 32}
    point = telemetry.point(_semconv.MODEL_BATCH_SIZE, **attrs("inference"))
    assert (point.count, point.sum) == (2, 64)
    assert list(point.explicit_bounds) == list(_semconv.BATCH_SIZE_BUCKETS)


def test_batch_size_callable(telemetry: Telemetry) -> None:
    """A batch_size callable is called with the call's arguments, positional and keyword."""
    seen: list[tuple[Any, ...]] = []

    def count(rows: Sequence[int], *, scale: int = 1) -> int:
        seen.append((list(rows), scale))
        return len(rows) * scale

    @inference(model="fraud-xgb", version="3", batch_size=count)
    def predict(rows: Sequence[int], *, scale: int = 1) -> int:
        return len(rows)

    predict([1, 2, 3])
    predict([1], scale=4)
    assert seen == [([1, 2, 3], 1), ([1], 4)]
    assert [s.attributes["model.batch_size"] for s in telemetry.spans()] == [3, 4]  # type: ignore[index]
    point = telemetry.point(_semconv.MODEL_BATCH_SIZE, **attrs("inference"))
    assert (point.count, point.sum) == (2, 7)


def test_set_batch_size_inside_the_call_wins(telemetry: Telemetry) -> None:
    """set_batch_size() from inside the call overrides the decorator's batch size, only for that call."""

    @inference(model="fraud-xgb", version="3", batch_size=8)
    def predict(rows: list[int], *, filter_odd: bool) -> int:
        if filter_odd:
            rows = [r for r in rows if r % 2 == 0]
            set_batch_size(len(rows))
        return len(rows)

    predict([1, 2, 3, 4, 6], filter_odd=True)
    predict([1, 2], filter_odd=False)
    assert [s.attributes["model.batch_size"] for s in telemetry.spans()] == [3, 8]  # type: ignore[index]
    point = telemetry.point(_semconv.MODEL_BATCH_SIZE, **attrs("inference"))
    assert (point.count, point.sum) == (2, 11)


def test_set_batch_size_applies_to_the_innermost_call(telemetry: Telemetry) -> None:
    """A nested stage's set_batch_size() does not leak into the outer stage."""

    @stage("tokenize", model="fraud-xgb", version="3")
    def tokenize(texts: list[str]) -> list[str]:
        set_batch_size(len(texts))
        return texts

    @inference(model="fraud-xgb", version="3")
    def predict(texts: list[str]) -> int:
        tokenize(texts)
        return 0

    predict(["a", "b"])
    by_name = {s.name: dict(s.attributes or {}) for s in telemetry.spans()}
    assert by_name["tokenize fraud-xgb"]["model.batch_size"] == 2
    assert "model.batch_size" not in by_name["inference fraud-xgb"]


def test_set_batch_size_picks_the_innermost_of_mixed_calls(telemetry: Telemetry) -> None:
    """Plain, streaming and async stages inside each other: set_batch_size() lands on the innermost running call.

    A plain function's call is found on the stack, an async or streaming one through the context: the two must
    agree on which call is innermost, also from a helper one frame below the decorated function.
    """

    @stage("stream", model="m", version="3")
    def chunks(rows: list[int]) -> Iterator[int]:
        set_batch_size(len(rows))  # a step of the stream, run inside the plain call below
        yield from rows

    def helper(n: int) -> None:
        set_batch_size(n)

    @stage("plain", model="m", version="3")
    def plain(rows: list[int]) -> list[int]:
        out = list(chunks(rows))
        helper(len(out) + 10)  # after the stream's steps: this call again
        return out

    @stage("async", model="m", version="3")
    async def outer(rows: list[int]) -> int:
        set_batch_size(len(rows) + 20)
        plain(rows)  # its set_batch_size() calls are its own and its stream's, not this call's
        return 0

    asyncio.run(outer([1, 2]))
    by_name = {s.name: dict(s.attributes or {}) for s in telemetry.spans()}
    assert by_name["stream m"]["model.batch_size"] == 2
    assert by_name["plain m"]["model.batch_size"] == 12
    assert by_name["async m"]["model.batch_size"] == 22
    assert telemetry.point(_semconv.MODEL_BATCH_SIZE, **attrs("plain", "m")).sum == 12


def test_set_batch_size_in_streams_async_and_threads(telemetry: Telemetry) -> None:
    """set_batch_size() works from a generator, an async function and a thread started with asyncio.to_thread."""

    @inference(model="gen", version="3")
    def stream(rows: list[int]) -> Iterator[int]:
        yield 0
        set_batch_size(len(rows))
        yield from rows

    @inference(model="async", version="3")
    async def predict(rows: list[int]) -> int:
        await asyncio.to_thread(set_batch_size, len(rows) + 100)
        return 0

    list(stream([1, 2, 3]))
    asyncio.run(predict([1]))
    by_name = {s.name: dict(s.attributes or {}) for s in telemetry.spans()}
    assert by_name["inference gen"]["model.batch_size"] == 3
    assert by_name["inference async"]["model.batch_size"] == 101


def test_set_batch_size_outside_a_call_does_nothing(telemetry: Telemetry) -> None:
    """set_batch_size() outside a decorated call, or before bind(), is a silent no-op."""
    set_batch_size(3)
    _stages.unbind()
    set_batch_size(3)
    assert telemetry.spans() == []


def test_invalid_batch_sizes_are_ignored_and_logged_once(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch size that is not a non-negative int is dropped (logged once), never raised into the call."""
    _safety._reset()

    @inference(model="fraud-xgb", version="3", batch_size=lambda rows: "many")  # type: ignore[arg-type]
    def predict(rows: list[int]) -> int:
        set_batch_size(-1)
        return 0

    with caplog.at_level(logging.WARNING, logger="obskit"):
        assert predict([1]) == 0
        assert predict([1]) == 0
    assert "model.batch_size" not in dict(telemetry.spans()[0].attributes or {})
    assert telemetry.points(_semconv.MODEL_BATCH_SIZE) == []
    assert [r.getMessage() for r in caplog.records] == [
        "obskit: ignoring batch size 'many': expected a non-negative int below 2**63"
    ]


def test_batch_size_accepts_index_types(telemetry: Telemetry) -> None:
    """Integer-like values (numpy integers) are accepted through __index__."""

    class Index:
        def __index__(self) -> int:
            return 5

    @inference(model="fraud-xgb", version="3")
    def predict() -> int:
        set_batch_size(Index())  # type: ignore[arg-type]
        return 0

    predict()
    assert telemetry.spans()[0].attributes["model.batch_size"] == 5  # type: ignore[index]


def test_batch_size_callable_that_raises_is_swallowed(telemetry: Telemetry, swallowing: None) -> None:
    """A failing batch_size callable is counted as an internal error; the call and its span go on."""
    _safety._reset()

    @inference(model="fraud-xgb", version="3", batch_size=lambda rows: rows.shape[0])
    def predict(rows: list[int]) -> int:
        return sum(rows)

    assert predict([1, 2]) == 3
    assert _safety.internal_error_count() == 1
    span = telemetry.span("inference fraud-xgb")
    assert dict(span.attributes or {}) == attrs("inference")
    assert span.status.status_code is StatusCode.UNSET
    assert telemetry.points(_semconv.MODEL_BATCH_SIZE) == []


def test_batch_size_callable_that_raises_surfaces_in_our_tests(telemetry: Telemetry) -> None:
    """With re-raise on (our own test suite), the same internal failure fails loudly."""

    @inference(model="fraud-xgb", version="3", batch_size=lambda rows: rows.shape[0])
    def predict(rows: list[int]) -> int:
        return sum(rows)

    with pytest.raises(AttributeError):
        predict([1, 2])


# --- errors ----------------------------------------------------------------------------------------------


class ModelError(Exception):
    class Timeout(Exception):
        pass


def test_error_path(telemetry: Telemetry) -> None:
    """A failure sets ERROR, records the exception event and error.type, and re-raises the very same exception."""
    original = ModelError.Timeout("GPU timed out")

    @inference(model="fraud-xgb", version="3")
    def predict(x: int) -> int:
        raise original

    with telemetry.tracer.start_as_current_span("request") as parent:
        with pytest.raises(ModelError.Timeout) as info:
            predict(1)
        assert trace.get_current_span() is parent  # context restored after the failure

    assert info.value is original
    frames = traceback.extract_tb(info.value.__traceback__)
    assert frames[-1].name == "predict"
    assert frames[-1].filename == __file__
    span = telemetry.span("inference fraud-xgb")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ModelError.Timeout: GPU timed out"
    assert dict(span.attributes or {}) == attrs("inference", **{"error.type": "ModelError.Timeout"})
    [event] = span.events
    assert event.name == "exception"
    assert event.attributes is not None
    # The SDK's exception event is fully qualified; error.type is the qualname, as contrib's HTTP error.type.
    assert event.attributes["exception.type"] == f"{__name__}.ModelError.Timeout"
    assert event.attributes["exception.message"] == "GPU timed out"
    failed = telemetry.point(_semconv.MODEL_DURATION, **attrs("inference"), **{"error.type": "ModelError.Timeout"})
    assert failed.count == 1
    assert telemetry.point(_semconv.MODEL_ACTIVE, **attrs("inference")).value == 0


def test_error_path_async(telemetry: Telemetry) -> None:
    """An async stage re-raises the same exception with the user's frame last and marks the span."""
    original = KeyError("feature")

    @inference(model="fraud-xgb", version="3")
    async def predict() -> int:
        await asyncio.sleep(0)
        raise original

    with pytest.raises(KeyError) as info:
        asyncio.run(predict())
    assert info.value is original
    assert traceback.extract_tb(info.value.__traceback__)[-1].name == "predict"
    assert telemetry.span("inference fraud-xgb").status.status_code is StatusCode.ERROR


def test_errors_and_successes_are_separate_series(telemetry: Telemetry) -> None:
    """Duration has one series per outcome, so error rate = count with error.type / total count."""

    @inference(model="fraud-xgb", version="3")
    def predict(x: int) -> int:
        if x < 0:
            raise ValueError(x)
        return x

    for x in (1, -1, 2, -2, 3):
        with contextlib.suppress(ValueError):
            predict(x)
    assert telemetry.point(_semconv.MODEL_DURATION, **attrs("inference")).count == 3
    assert telemetry.point(_semconv.MODEL_DURATION, **attrs("inference"), **{"error.type": "ValueError"}).count == 2


def test_cancellation_is_not_an_error(telemetry: Telemetry) -> None:
    """As in the OpenTelemetry API, BaseExceptions such as CancelledError end the span without an error status."""

    @inference(model="fraud-xgb", version="3")
    async def predict() -> int:
        await asyncio.Event().wait()
        return 0

    async def main() -> None:
        task = asyncio.create_task(predict())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    span = telemetry.span("inference fraud-xgb")
    assert span.status.status_code is StatusCode.UNSET
    assert telemetry.point(_semconv.MODEL_DURATION, **attrs("inference")).count == 1
    assert telemetry.point(_semconv.MODEL_ACTIVE, **attrs("inference")).value == 0


# --- metrics ---------------------------------------------------------------------------------------------


def test_metric_values(telemetry: Telemetry) -> None:
    """Duration count, buckets and attributes, active back to 0, batch size, with the semconv units."""

    @inference(model="fraud-xgb", version="3", batch_size=4)
    def predict(x: int) -> int:
        return x

    @preprocess(model="fraud-xgb", version="3")
    def featurize(x: int) -> int:
        return x

    for i in range(3):
        predict(featurize(i))

    duration = telemetry.point(_semconv.MODEL_DURATION, **attrs("inference"))
    assert duration.count == 3
    assert duration.sum > 0
    assert list(duration.explicit_bounds) == list(_semconv.MODEL_DURATION_BUCKETS)
    assert telemetry.point(_semconv.MODEL_DURATION, **attrs("preprocess")).count == 3
    assert telemetry.point(_semconv.MODEL_ACTIVE, **attrs("inference")).value == 0
    assert telemetry.point(_semconv.MODEL_ACTIVE, **attrs("preprocess")).value == 0
    batch = telemetry.point(_semconv.MODEL_BATCH_SIZE, **attrs("inference"))
    assert (batch.count, batch.sum) == (3, 12)
    assert [p.attributes["model.stage"] for p in telemetry.points(_semconv.MODEL_BATCH_SIZE)] == ["inference"]

    data = telemetry.reader.get_metrics_data()
    assert data is not None
    units = {m.name: m.unit for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert units == {
        _semconv.MODEL_DURATION: "s",
        _semconv.MODEL_ACTIVE: "{call}",
        _semconv.MODEL_BATCH_SIZE: "{item}",
    }


def test_active_counts_calls_in_progress(telemetry: Telemetry) -> None:
    """obskit.model.active is 1 during a call and 0 after it."""
    during: list[int] = []

    @inference(model="fraud-xgb", version="3")
    def predict() -> None:
        during.append(telemetry.point(_semconv.MODEL_ACTIVE, **attrs("inference")).value)

    predict()
    assert during == [1]
    assert telemetry.point(_semconv.MODEL_ACTIVE, **attrs("inference")).value == 0


def test_concurrent_calls_from_threads(telemetry: Telemetry) -> None:
    """Calls from several threads are all counted, each span has its own thread's parent, and active ends at 0."""

    @inference(model="fraud-xgb", version="3", batch_size=1)
    def predict(x: int) -> int:
        return x

    def request(i: int) -> int:
        with telemetry.tracer.start_as_current_span(f"request {i}") as parent:
            for _ in range(20):
                predict(i)
            return parent.get_span_context().span_id

    with ThreadPoolExecutor(max_workers=4) as pool:
        parents = set(pool.map(request, range(8)))
    spans = telemetry.spans()
    assert len(spans) == 160
    assert {s.parent.span_id for s in spans if s.parent} == parents
    assert telemetry.point(_semconv.MODEL_DURATION, **attrs("inference")).count == 160
    assert telemetry.point(_semconv.MODEL_BATCH_SIZE, **attrs("inference")).sum == 160
    assert telemetry.point(_semconv.MODEL_ACTIVE, **attrs("inference")).value == 0


def test_duration_exemplar_points_at_the_stage_span(telemetry: Telemetry) -> None:
    """The duration histogram's exemplar carries the stage span's trace and span id."""

    @inference(model="fraud-xgb", version="3")
    def predict() -> int:
        return 0

    with telemetry.tracer.start_as_current_span("request"):
        predict()
    span = telemetry.span("inference fraud-xgb")
    exemplars = telemetry.point(_semconv.MODEL_DURATION, **attrs("inference")).exemplars
    assert [(e.trace_id, e.span_id) for e in exemplars] == [(span.context.trace_id, span.context.span_id)]


def test_metrics_only_mode_creates_no_span(telemetry: Telemetry) -> None:
    """With traces disabled, every kind of stage records metrics and creates no span at all."""
    telemetry.bind(traces=False)

    @inference(model="fraud-xgb", version="3")
    def predict(x: int) -> int:
        set_batch_size(2)
        assert not trace.get_current_span().get_span_context().is_valid
        return x

    @inference(model="fraud-xgb", version="3")
    def stream() -> Iterator[int]:
        yield 1

    @inference(model="fraud-xgb", version="3")
    async def apredict() -> int:
        return 1

    original = ValueError("x")

    @inference(model="fraud-xgb", version="3")
    def fail() -> None:
        raise original

    assert predict(1) == 1
    assert list(stream()) == [1]
    assert asyncio.run(apredict()) == 1
    with pytest.raises(ValueError, match="x") as info:
        fail()
    assert info.value is original
    assert telemetry.spans() == []
    assert telemetry.point(_semconv.MODEL_DURATION, **attrs("inference")).count == 3
    assert telemetry.point(_semconv.MODEL_DURATION, **attrs("inference"), **{"error.type": "ValueError"}).count == 1
    assert telemetry.point(_semconv.MODEL_TIME_TO_FIRST_OUTPUT, **attrs("inference")).count == 1
    assert telemetry.point(_semconv.MODEL_BATCH_SIZE, **attrs("inference")).sum == 2
    assert telemetry.point(_semconv.MODEL_ACTIVE, **attrs("inference")).value == 0


def test_metrics_only_repeated_calls(telemetry: Telemetry) -> None:
    """From the second call on a site takes the metrics-only fast path: same counts, batch sizes, errors, actives."""
    telemetry.bind(traces=False)
    seen_active: list[int] = []
    original = KeyError("k")

    @inference(model="fraud-xgb", version="3", batch_size=4)
    def predict(x: int) -> int:
        seen_active.append(telemetry.point(_semconv.MODEL_ACTIVE, **attrs("inference")).value)
        if x < 0:
            raise original
        if x == 7:
            set_batch_size(9)
        return x * 2

    assert [predict(i) for i in (1, 2, 7, 3)] == [2, 4, 14, 6]
    with pytest.raises(KeyError) as info:
        predict(-1)
    assert info.value is original
    assert seen_active[1:] == [1, 1, 1, 1]  # the first call is counted before its site is cached, too
    assert telemetry.point(_semconv.MODEL_DURATION, **attrs("inference")).count == 4
    assert telemetry.point(_semconv.MODEL_DURATION, **attrs("inference"), **{"error.type": "KeyError"}).count == 1
    batch = telemetry.point(_semconv.MODEL_BATCH_SIZE, **attrs("inference"))
    assert (batch.count, batch.sum) == (5, 4 + 4 + 9 + 4 + 4)
    assert telemetry.point(_semconv.MODEL_ACTIVE, **attrs("inference")).value == 0

    @preprocess(model="fraud-xgb", version="3", batch_size=len)
    def featurize(rows: list[int]) -> int:
        return len(rows)

    assert [featurize([1] * n) for n in (2, 3, 5)] == [2, 3, 5]
    sizes = telemetry.point(_semconv.MODEL_BATCH_SIZE, **attrs("preprocess"))
    assert (sizes.count, sizes.sum) == (3, 10)
    assert telemetry.spans() == []


def test_unbound_calls_are_plain_calls(telemetry: Telemetry) -> None:
    """Before bind() and after unbind(), every kind of decorated function just runs and returns its value."""
    _stages.unbind()

    @inference(model="fraud-xgb", version="3", batch_size=lambda x: 1 // 0)
    def predict(x: int) -> int:
        set_batch_size(3)
        return x + 1

    @inference
    def stream() -> Iterator[int]:
        yield 1

    @inference
    async def apredict() -> int:
        return 2

    @inference
    async def astream() -> AsyncIterator[int]:
        yield 3

    async def collect() -> list[int]:
        return [i async for i in astream()]

    assert predict(1) == 2
    assert list(stream()) == [1]
    assert asyncio.run(apredict()) == 2
    assert asyncio.run(collect()) == [3]
    assert telemetry.spans() == []
    assert telemetry.points(_semconv.MODEL_DURATION) == []


def test_telemetry_failure_never_reaches_the_call(telemetry: Telemetry, swallowing: None) -> None:
    """If a metric instrument raises, the call still returns its value and the span still ends."""
    _safety._reset()

    class BrokenHistogram:
        name = _semconv.MODEL_DURATION

        def series(self, attributes: Any) -> BrokenHistogram:
            return self

        def record(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("exporter exploded")

    binding = _stages._binding
    assert binding is not None
    binding.duration = BrokenHistogram()  # type: ignore[assignment]

    @inference(model="fraud-xgb", version="3")
    def predict(x: int) -> int:
        return x

    @inference(model="fraud-xgb", version="3")
    def stream() -> Iterator[int]:
        yield 1

    assert predict(7) == 7
    assert predict(8) == 8  # a resolved site: the wrapper's own path, not the first call's
    assert list(stream()) == [1]
    assert _safety.internal_error_count() == 3
    assert not trace.get_current_span().get_span_context().is_valid
    # The other instruments and the spans still finish: nothing stays open or counted as active.
    assert [s.name for s in telemetry.spans()] == ["inference fraud-xgb"] * 3
    assert telemetry.point(_semconv.MODEL_ACTIVE, **attrs("inference")).value == 0


def test_failing_tracer_degrades_to_a_plain_call(telemetry: Telemetry, swallowing: None) -> None:
    """If starting the span fails, the call runs undecorated and nothing is left half-open."""
    _safety._reset()

    class BrokenTracer:
        def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
            raise RuntimeError("tracer exploded")

    binding = _stages._binding
    assert binding is not None
    binding.tracer = BrokenTracer()  # type: ignore[assignment]

    @inference(model="fraud-xgb", version="3")
    def predict(x: int) -> int:
        return x

    @inference(model="fraud-xgb", version="3")
    async def apredict(x: int) -> int:
        return x

    @inference(model="fraud-xgb", version="3")
    def stream() -> Iterator[int]:
        yield 1

    @inference(model="fraud-xgb", version="3")
    async def astream() -> AsyncIterator[int]:
        yield 2

    async def collect() -> list[int]:
        return [i async for i in astream()]

    assert predict(7) == 7
    assert predict(9) == 9  # a resolved site: the inlined path
    assert asyncio.run(apredict(8)) == 8
    assert list(stream()) == [1]
    assert asyncio.run(collect()) == [2]
    assert _safety.internal_error_count() == 5
    # No call is left counted as in progress.
    assert [p.value for p in telemetry.points(_semconv.MODEL_ACTIVE)] in ([], [0])


# --- signature, typing, misuse ---------------------------------------------------------------------------


def test_wrapped_function_keeps_name_doc_and_signature(telemetry: Telemetry) -> None:
    """Name, qualname, docstring, module, annotations and inspect.signature are those of the user's function."""

    def predict(features: list[float], *, threshold: float = 0.5) -> bool:
        """Score one request."""
        return sum(features) > threshold

    for decorated in (inference(predict), inference(model="m")(predict), stage("rank", model="m")(predict)):
        assert decorated.__name__ == "predict"
        assert decorated.__qualname__ == predict.__qualname__
        assert decorated.__doc__ == "Score one request."
        assert decorated.__module__ == __name__
        assert decorated.__wrapped__ is predict  # type: ignore[attr-defined]
        assert inspect.signature(decorated) == inspect.signature(predict)
        assert typing.get_type_hints(decorated) == {"features": list[float], "threshold": float, "return": bool}
        assert decorated([1.0], threshold=0.1) is True


def test_kind_checks_still_see_the_user_function(telemetry: Telemetry) -> None:
    """inspect's coroutine/generator checks (used by FastAPI and Starlette) answer as for the undecorated function."""

    @inference
    async def coro() -> None:
        pass

    @inference
    def gen() -> Iterator[int]:
        yield 1

    @inference
    async def agen() -> AsyncIterator[int]:
        yield 1

    assert inspect.iscoroutinefunction(coro)
    assert inspect.isgeneratorfunction(gen)
    assert inspect.isasyncgenfunction(agen)
    assert not inspect.iscoroutinefunction(gen)


class Body:
    """A request body model, resolved from a string annotation."""


def test_fastapi_style_signature_inspection(telemetry: Telemetry) -> None:
    """Dependency injection inspects the real parameters, annotations and defaults through the decorator."""

    async def predict(body: Body, model: str = "default", limit: int | None = None) -> dict[str, str]:
        return {"model": model}

    decorated = inference(model="fraud-xgb")(predict)
    params = inspect.signature(decorated, eval_str=True).parameters
    assert [(p.name, p.annotation, p.default, p.kind) for p in params.values()] == [
        ("body", Body, inspect.Parameter.empty, inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ("model", str, "default", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ("limit", int | None, None, inspect.Parameter.POSITIONAL_OR_KEYWORD),
    ]
    assert inspect.signature(decorated, eval_str=True).return_annotation == dict[str, str]
    assert typing.get_type_hints(decorated)["body"] is Body


def test_fastapi_endpoint_with_decorated_handlers(telemetry: Telemetry) -> None:
    """A real FastAPI app parses query parameters of decorated sync and async endpoints."""
    fastapi = pytest.importorskip("fastapi")
    testclient = pytest.importorskip("fastapi.testclient")
    app = fastapi.FastAPI()

    @inference(model="fraud-xgb", version="3")
    def sync_endpoint(x: int, name: str = "n") -> dict[str, Any]:
        return {"x": x * 2, "name": name}

    @inference(model="fraud-xgb", version="3", batch_size=lambda x: x)
    async def async_endpoint(x: int) -> dict[str, Any]:
        return {"x": x + 1}

    app.add_api_route("/sync", sync_endpoint)
    app.add_api_route("/async", async_endpoint)

    with testclient.TestClient(app) as client:
        assert client.get("/sync", params={"x": 2, "name": "a"}).json() == {"x": 4, "name": "a"}
        assert client.get("/async", params={"x": 2}).json() == {"x": 3}
        assert client.get("/sync").status_code == 422  # the required parameter is still seen
    assert [s.attributes.get("model.batch_size") for s in telemetry.spans()] == [None, 2]  # type: ignore[union-attr]


def test_contextmanager_misuse_warns_and_still_works(telemetry: Telemetry) -> None:
    """@inference above @contextmanager warns once, at the user's line, and the function still works."""

    with pytest.warns(ObskitWarning, match=r"below @contextmanager") as record:

        @inference(model="fraud-xgb", version="3")
        @contextlib.contextmanager
        def session() -> Iterator[str]:
            yield "s"

    assert len(record) == 1
    assert record[0].filename == __file__
    with session() as value:
        assert value == "s"
    assert [s.name for s in telemetry.spans()] == ["inference fraud-xgb"]


def test_contextmanager_misuse_warns_for_bare_use_too(telemetry: Telemetry) -> None:
    """Bare @inference above @asynccontextmanager warns at the user's line as well."""
    with pytest.warns(ObskitWarning) as record:

        @inference
        @contextlib.asynccontextmanager
        async def session() -> AsyncIterator[str]:
            yield "s"

    assert record[0].filename == __file__


def test_decorator_below_contextmanager_times_the_block(telemetry: Telemetry) -> None:
    """Below @contextmanager a stage spans the with-block, and an exception in the block is the same object."""
    original = ValueError("in block")

    @contextlib.contextmanager
    @inference(model="fraud-xgb", version="3")
    def session() -> Iterator[int]:
        yield 1

    with session() as one:
        assert one == 1
        assert not telemetry.spans()
    with pytest.raises(ValueError, match="in block") as info, session():
        raise original
    assert info.value is original
    ok, failed = telemetry.spans()
    assert ok.status.status_code is StatusCode.UNSET
    assert failed.status.status_code is StatusCode.ERROR


def test_decoration_mistakes_raise_at_definition() -> None:
    """Wrong decorator arguments raise TypeError where they are written, not at call time."""
    with pytest.raises(TypeError, match="keyword-only"):
        inference("fraud-xgb")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="non-empty string"):
        stage("")
    with pytest.raises(TypeError, match="batch_size"):
        inference(batch_size=-1)
    with pytest.raises(TypeError, match="batch_size"):
        inference(batch_size="3")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="model"):
        preprocess(model="")
    with pytest.raises(TypeError, match="callable"):
        stage("x")(42)  # type: ignore[arg-type]


def test_decorating_twice_nests_spans(telemetry: Telemetry) -> None:
    """Two stage decorators on one function give a parent and a child span."""

    @stage("outer", model="m")
    @stage("inner", model="m")
    def work() -> int:
        return 1

    assert work() == 1
    inner, outer = telemetry.spans()
    assert (inner.name, outer.name) == ("inner m", "outer m")
    assert inner.parent is not None
    assert inner.parent.span_id == outer.context.span_id


def test_stream_iterated_across_tasks(telemetry: Telemetry) -> None:
    """A stream whose steps run in different tasks still restores each task's context."""

    @inference(model="fraud-xgb", version="3")
    async def stream() -> AsyncGenerator[int, None]:
        for i in range(3):
            yield i

    async def main() -> list[int]:
        agen = stream()
        items = []
        for _ in range(3):
            items.append(await asyncio.create_task(anext_(agen)))
        await agen.aclose()
        return items

    async def anext_(agen: AsyncGenerator[int, None]) -> int:
        return await agen.__anext__()

    assert asyncio.run(main()) == [0, 1, 2]
    assert telemetry.span("inference fraud-xgb").status.status_code is StatusCode.UNSET


def test_active_counts_calls_in_progress_across_sites(telemetry: Telemetry) -> None:
    """obskit.model.active reads 1 inside a call, 2 inside two nested sites with the same attributes, 0 after."""
    seen: list[float] = []

    @inference(model="fraud-xgb", version="3")
    def inner() -> None:
        seen.append(telemetry.point(_semconv.MODEL_ACTIVE, **attrs("inference")).value)

    @inference(model="fraud-xgb", version="3")
    def outer() -> None:
        seen.append(telemetry.point(_semconv.MODEL_ACTIVE, **attrs("inference")).value)
        inner()

    outer()
    assert seen == [1, 2]
    assert telemetry.point(_semconv.MODEL_ACTIVE, **attrs("inference")).value == 0


def test_a_batch_size_beyond_int64_is_invalid(telemetry: Telemetry, caplog: pytest.LogCaptureFixture) -> None:
    """2**63 and more (OTLP's int64 cannot carry it) is invalid: a TypeError at the decorator, else ignored."""
    _safety._reset()
    with pytest.raises(TypeError, match=r"batch_size= must be a non-negative int below 2\*\*63"):
        inference(batch_size=2**63)

    class Huge:
        def __index__(self) -> int:
            return 2**64

    @inference(model="fraud-xgb", version="3", batch_size=lambda n: n)
    def predict(n: object) -> int:
        return 0

    @inference(model="fraud-xgb", version="3")
    def predict_set(n: object) -> int:
        set_batch_size(n)  # type: ignore[arg-type]
        return 0

    with caplog.at_level(logging.WARNING, logger="obskit"):
        for n in (2**63, Huge(), 2**64 + 1, 2**20000):
            assert predict(n) == 0
            assert predict_set(n) == 0
        assert predict(2**63 - 1) == 0
    assert [dict(s.attributes or {}).get("model.batch_size") for s in telemetry.spans()] == [None] * 8 + [2**63 - 1]
    assert [p.count for p in telemetry.points(_semconv.MODEL_BATCH_SIZE)] == [1]
    assert [r.getMessage() for r in caplog.records] == [
        "obskit: ignoring batch size 9223372036854775808: expected a non-negative int below 2**63"
    ]
    # The log message's value never fails to format, even where repr() does (ints past 4300 digits).
    assert repr(_stages._Shown(2**20000)) == "<int>"


def test_a_huge_batch_size_never_stops_metrics_export(receiver: testing.OtlpReceiver) -> None:
    """After a batch size past int64, the stage's spans and metric points still arrive over OTLP, none dropped."""
    handle = obskit.init(service_name="huge-batch", endpoint=receiver.grpc_endpoint, system_metrics=False)

    @inference(model="fraud-xgb", version="3", batch_size=lambda n: n)
    def predict(n: int) -> int:
        return n

    @inference(model="fraud-xgb", version="3")
    def predict_set(n: int) -> int:
        set_batch_size(n)
        return n

    predict(2**63)
    predict_set(2**64)
    assert handle.force_flush(5)
    predict(3)
    predict_set(4)
    assert handle.force_flush(5)
    model = {"model.name": "fraud-xgb", "model.version": "3", "model.stage": "inference"}
    received = receiver.wait_for_metric(
        _semconv.MODEL_BATCH_SIZE, attributes=model, predicate=lambda p: p.count == 2, timeout=10
    )
    assert (received.count, received.sum) == (2, 7)
    received = receiver.wait_for_metric(
        _semconv.MODEL_DURATION, attributes=model, predicate=lambda p: p.count == 4, timeout=10
    )
    spans = receiver.wait_for_spans(4, name="inference fraud-xgb", timeout=10)
    assert sorted(str(s.attributes.get("model.batch_size")) for s in spans) == ["3", "4", "None", "None"]
    assert {signal: stats.dropped_total for signal, stats in handle.telemetry_stats().items()} == {
        "spans": 0,
        "metric_points": 0,
        "logs": 0,
    }
    assert handle.shutdown(5)


def test_set_batch_size_with_a_failing_index_is_ignored(telemetry: Telemetry, caplog: pytest.LogCaptureFixture) -> None:
    """A value whose __index__ raises is an invalid batch size like any other: ignored and logged once, never raised."""
    _safety._reset()

    class Broken:
        def __index__(self) -> int:
            raise ValueError("not an index")

        def __repr__(self) -> str:
            return "Broken()"

    class Interrupting:
        def __index__(self) -> int:
            raise KeyboardInterrupt

    @inference(model="fraud-xgb", version="3")
    def predict(value: object) -> int:
        set_batch_size(value)  # type: ignore[arg-type]
        return 0

    @inference(model="fraud-xgb", version="3", batch_size=lambda: Broken())  # type: ignore[arg-type]
    def predict_fn() -> int:
        return 1

    with caplog.at_level(logging.WARNING, logger="obskit"):
        assert predict(Broken()) == 0
        assert predict(Broken()) == 0
        assert predict_fn() == 1
    assert _safety.internal_error_count() == 0
    assert [dict(s.attributes or {}).get("model.batch_size") for s in telemetry.spans()] == [None] * 3
    assert telemetry.points(_semconv.MODEL_BATCH_SIZE) == []
    assert [r.getMessage() for r in caplog.records] == [
        "obskit: ignoring batch size Broken(): expected a non-negative int below 2**63"
    ]
    with pytest.raises(KeyboardInterrupt):  # not an Exception: it reaches the caller, as from any other code
        predict(Interrupting())


def _stage_overflows(counts: dict[tuple[str, str], int]) -> dict[tuple[str, str], float]:
    """The overflow counts of the stage histograms (obskit.model.active is counted per collection, left out)."""
    return {pair: count for pair, count in counts.items() if pair[0] != _semconv.MODEL_ACTIVE}


def test_overflow_counts_each_stage_measurement_recorded_as_other() -> None:
    """One overflow per measurement recorded as _OTHER, per histogram; a histogram a site never records counts none."""

    def sites(i: int) -> tuple[typing.Callable[[list[int]], int], typing.Callable[[], Iterator[int]]]:
        @inference(model=f"m{i}", version="3", batch_size=len)
        def predict(rows: list[int]) -> int:
            if not rows:
                raise ValueError("no rows")
            return len(rows)

        @inference(model=f"m{i}", version="3")
        def stream() -> Iterator[int]:
            yield 1

        return predict, stream

    with testing.capture_telemetry(max_label_values=1) as captured:
        for predict, stream in map(sites, range(3)):  # m0 takes the one slot of each histogram's model.name
            for _ in range(10):
                predict([1, 2])
            for _ in range(4):
                assert list(stream()) == [1]
            for _ in range(3):
                with pytest.raises(ValueError, match="no rows"):
                    predict([])
        # m1 and m2: 10 + 4 + 3 durations each (the failures in their error.type series), 10 + 3 batch sizes (a
        # failed call's too), 4 first outputs. No batch size for the streams, no first output for predict: nothing
        # counted for them.
        expected = {
            (_semconv.MODEL_DURATION, "model.name"): 34,
            (_semconv.MODEL_BATCH_SIZE, "model.name"): 26,
            (_semconv.MODEL_TIME_TO_FIRST_OUTPUT, "model.name"): 8,
        }
        assert metrics.overflow_counts() == expected  # nothing collected yet: no obskit.model.active observation
        other = {"model.name": _semconv.OTHER}
        assert captured.metric(_semconv.MODEL_DURATION).count(other) == 34
        assert captured.metric(_semconv.MODEL_DURATION).count({**other, "error.type": "ValueError"}) == 6
        assert captured.metric(_semconv.MODEL_BATCH_SIZE).count(other) == 26
        assert captured.metric(_semconv.MODEL_TIME_TO_FIRST_OUTPUT).count(other) == 8
        exported = {
            (p.attributes["obskit.metric"], p.attributes["obskit.attribute"]): p.value
            for p in captured.metric(_semconv.CARDINALITY_OVERFLOW).points
        }
        assert _stage_overflows(exported) == expected


def test_overflow_counts_each_measurement_without_traces(telemetry: Telemetry) -> None:
    """Metrics-only calls (a plain function's lean path, a method, async) count one overflow per replaced measurement."""
    guard = _guard.LabelGuard(max_values=1)
    _stages.bind(
        telemetry.tracer_provider.get_tracer("obskit"),
        telemetry.meter_provider.get_meter("obskit"),
        model_name=None,
        model_version=None,
        traces_enabled=False,
        label_filter=lambda name, attributes: guard.instrument(name).reusable_filter(attributes, None),
    )

    @inference(model="m0", version="3", batch_size=2)
    def first() -> int:
        return 0

    @inference(model="m1", version="3", batch_size=2)
    def plain() -> int:
        return 1

    class Model:
        @inference(model="m2", version="3", batch_size=2)
        def method(self) -> int:
            return 2

    @inference(model="m3", version="3", batch_size=2)
    async def coroutine() -> int:
        return 3

    for _ in range(5):
        assert first() == 0
        assert plain() == 1
        assert Model().method() == 2
        assert asyncio.run(coroutine()) == 3
    assert guard.overflow_counts() == {
        (_semconv.MODEL_DURATION, "model.name"): 15,
        (_semconv.MODEL_BATCH_SIZE, "model.name"): 15,
    }
    assert [p.count for p in telemetry.points(_semconv.MODEL_DURATION)] == [5, 15]


def test_async_work_behind_a_sync_wrapper_or_an_async_call_is_timed_whole() -> None:
    """A sync functools.wraps wrapper around a coroutine function, and an object with an async __call__, return
    the coroutine that is the work: the stage span is still open while it runs (it ended at its creation)."""
    from obskit.testing import capture_telemetry

    def retry(fn: Any) -> Any:
        @functools.wraps(fn)
        def call(*args: Any) -> Any:
            return fn(*args)

        return call

    with capture_telemetry() as telemetry:
        seen_open: list[bool] = []

        @obskit.inference(model="wrapped")
        @retry
        async def wrapped(x: int) -> int:
            await asyncio.sleep(0)
            seen_open.append(not telemetry.spans())
            return x + 1

        class Scorer:
            async def __call__(self, x: int) -> int:
                await asyncio.sleep(0)
                seen_open.append(not telemetry.spans())
                return x * 2

        scorer = obskit.inference(model="scorer")(Scorer())
        assert asyncio.run(wrapped(1)) == 2
        assert asyncio.run(scorer(3)) == 6
        assert seen_open == [True, False]  # the second ran after the first span had ended
        assert [s.name for s in telemetry.spans()] == ["inference wrapped", "inference scorer"]
        telemetry.clear()
        assert asyncio.run(scorer(4)) == 8
        assert seen_open[-1] is True
