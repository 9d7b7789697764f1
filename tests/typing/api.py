"""Type-level checks of the public API, run by mypy (never executed)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

from typing_extensions import assert_type

import obskit


@obskit.inference
def bare(x: int) -> str:
    return str(x)


@obskit.inference(model="m", version="1")
def parametrised(x: int, *, scale: float = 1.0) -> float:
    return x * scale


@obskit.stage("tokenize", model="m")
def tokens(text: str) -> Iterator[str]:
    yield from text.split()


@obskit.preprocess(batch_size=lambda rows: len(rows))
async def agen(rows: list[int]) -> AsyncIterator[int]:
    for row in rows:
        yield row


assert_type(bare(1), str)
assert_type(parametrised(2, scale=0.5), float)
assert_type(tokens("a b"), Iterator[str])
assert_type(agen([1]), AsyncIterator[int])
assert_type(obskit.init(service_name="x"), obskit.Handle)
assert_type(obskit.shutdown(), bool)
assert_type(obskit.force_flush(1.0), bool)
handle: obskit.Handle = obskit.init()
assert_type(handle.force_flush(), bool)
counter = obskit.metrics.counter("requests", attributes=("model.name",))
counter.add(1, {"model.name": "m"})
decorate: Callable[[Callable[[int], int]], Callable[[int], int]] = obskit.postprocess(model="m")
