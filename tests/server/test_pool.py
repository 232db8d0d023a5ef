"""The model pool under load: disconnects stop the engine, two models serve at once, the least
recently used model makes room, a 503 carries the plan's reason, idle models unload."""

from __future__ import annotations

import threading
import time

import openai
import psutil
import pytest
from openai import OpenAI

from app.core.cancel import CancelToken
from app.core.engine.host import STREAM_WINDOW
from app.core.fit import DEFAULT_RAM_MARGIN
from app.server.app import AHEAD
from tests.server.conftest import name_of

PROMPT = [{"role": "user", "content": "Tell me about the weather and the sea."}]


def _client(server) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=120)


_DEBUG: list = []


def _debug() -> str:
    return repr([list(x) for x in _DEBUG])


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_for(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting ({_debug()})")


def test_a_client_that_disconnects_stops_the_engine(server, tiny_files):
    model = name_of(tiny_files["Q8_0"])
    with _client(server) as c:
        stream = c.chat.completions.create(
            model=model,
            messages=PROMPT,
            max_tokens=3000,
            stream=True,
            seed=1,
            extra_body={"ignore_eos": True},
        )
        received = 0
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received += 1
            if received >= 10:
                break
        stream.close()  # the connection goes away mid-stream
        _DEBUG[:] = [server.pool.log]
        record = _wait_for(
            lambda: next((r for r in server.pool.log if r.finish == "disconnected"), None)
        )
        # The engine counted every token it generated: only a few more than the server had
        # sent when the client went away, far from 3000.  The two windows bound the text pieces
        # in flight (AHEAD + STREAM_WINDOW + the two in hand), but a token without text of its
        # own (part of a UTF-8 character) passes the server's window uncounted, hence the
        # slack: CI once saw 18 over the pieces sent, where 16 had been assumed.
        assert record.tokens >= record.sent >= received
        assert record.tokens - record.sent <= 2 * (AHEAD + STREAM_WINDOW), record
        # and the model is free at once for the next request
        out = c.chat.completions.create(model=model, messages=PROMPT, max_tokens=5)
        assert out.choices[0].message.content is not None


def test_two_clients_on_two_models_at_once(server, tiny_files):
    """A long stream on one model keeps producing while a second model serves a whole reply.

    The long stream has ten times the tokens of the short one, and the short one starts only
    once the long one is producing, so the overlap does not hang on which thread starts first:
    a pool that served one model at a time would leave the short reply waiting for all of it.
    """
    names = [name_of(tiny_files["Q8_0"]), name_of(tiny_files["Q4_K_M"])]
    long_stamps: list[float] = []
    producing = threading.Event()
    stop = threading.Event()
    errors: list[BaseException] = []

    def _stream(c: OpenAI, model: str, max_tokens: int):
        return c.chat.completions.create(
            model=model,
            messages=PROMPT,
            max_tokens=max_tokens,
            stream=True,
            seed=2,
            extra_body={"ignore_eos": True},
        )

    def run_long() -> None:
        try:
            with _client(server) as c:
                stream = _stream(c, names[0], 3000)
                for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        long_stamps.append(time.monotonic())
                        if len(long_stamps) == 10:
                            producing.set()
                    if stop.is_set():
                        break
                stream.close()
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            producing.set()

    # Load both first, so the streams measure generation, not loading.
    with _client(server) as c:
        for m in names:
            c.completions.create(model=m, prompt="hi", max_tokens=1)
    long_thread = threading.Thread(target=run_long)
    long_thread.start()
    try:
        assert producing.wait(60), "the long stream produced nothing"
        assert not errors, errors
        short: list[float] = []
        with _client(server) as c:
            for chunk in _stream(c, names[1], 300):
                if chunk.choices and chunk.choices[0].delta.content:
                    short.append(time.monotonic())
        long_done_early = not long_thread.is_alive()
    finally:
        stop.set()
        long_thread.join(60)
    assert not errors, errors
    assert len(short) > 100, len(short)
    assert not long_done_early, "the long stream ended before the short one: no overlap measured"
    # The long model kept producing all through the short reply: both engines ran at once.
    assert sum(short[0] < t < short[-1] for t in long_stamps) > 10
    assert {m.name for m in server.pool.loaded()} == set(names)
    pids = server.pool.engine_pids()
    assert len(set(pids)) == 2 and all(psutil.pid_exists(p) for p in pids)


def _budget_for_two(planner, tiny_files) -> int:
    """A what-if RAM budget where two tiny models fit at the full context, and what is left
    next to them is half of what a third needs even at the smallest context."""
    need = max(planner.plan_load(p, 4096).ram_bytes for p in tiny_files.values())
    least = min(planner.plan_load(p, 256).ram_bytes for p in tiny_files.values())
    return DEFAULT_RAM_MARGIN + 2 * need + least // 2


def test_a_third_model_evicts_the_least_recently_used(start_server, planner, tiny_files):
    server = start_server(ram_budget_bytes=_budget_for_two(planner, tiny_files))
    a, b, c3 = (name_of(tiny_files[q]) for q in ("Q8_0", "Q4_K_M", "Q2_K"))
    with _client(server) as c:
        for m in (a, b, a):  # a used last: b is the least recently used
            c.completions.create(model=m, prompt="hi", max_tokens=2)
        first_pids = set(server.pool.engine_pids())
        assert {m.name for m in server.pool.loaded()} == {a, b}
        c.completions.create(model=c3, prompt="hi", max_tokens=2)
    assert {m.name for m in server.pool.loaded()} == {a, c3}
    evicted = [e for e in server.pool.events if e.kind == "unloaded"]
    assert [e.model for e in evicted] == [b] and "least recently used" in evicted[0].why
    # b's engine process is gone, a's is the same one
    gone = first_pids - set(server.pool.engine_pids())
    assert len(gone) == 1 and all(_gone(p) for p in gone)


def test_503_with_the_plans_reason_when_nothing_can_be_evicted(start_server, planner, tiny_files):
    server = start_server(ram_budget_bytes=_budget_for_two(planner, tiny_files))
    pool = server.pool
    a, b = pool.resolve(name_of(tiny_files["Q8_0"])), pool.resolve(name_of(tiny_files["Q4_K_M"]))
    # Both loaded models are answering requests (held as a request holds them): none can go.
    with pool.use(a, CancelToken()), pool.use(b, CancelToken()), _client(server) as c:
        with pytest.raises(openai.APIStatusError) as info:
            c.completions.create(model=name_of(tiny_files["Q2_K"]), prompt="hi", max_tokens=2)
        assert info.value.status_code == 503
        assert info.value.body["code"] == "model_does_not_fit"
        message = info.value.message
        assert "does not fit" in message and "MB" in message  # the plan's reason, with figures
        assert {m.name for m in pool.loaded()} == {a.name, b.name}


def test_an_idle_model_unloads_after_the_ttl(start_server, tiny_files):
    server = start_server(idle_ttl_s=1.0)
    with _client(server) as c:
        c.completions.create(model=name_of(tiny_files["Q8_0"]), prompt="hi", max_tokens=2)
    assert len(server.pool.loaded()) == 1
    pid = server.pool.engine_pids()[0]
    _wait_for(lambda: not server.pool.loaded(), timeout=10)
    _wait_for(lambda: _gone(pid))
    # The event is logged once the engine has closed, which returns a moment after its process
    # is gone (CI once looked in between).
    _wait_for(lambda: any("idle" in e.why for e in server.pool.events), timeout=10)


def test_requests_to_one_model_queue(server, tiny_files):
    model = name_of(tiny_files["Q8_0"])
    results: list[str] = []
    errors: list[BaseException] = []

    def run(seed: int) -> None:
        try:
            with _client(server) as c:
                out = c.completions.create(model=model, prompt="The sea", max_tokens=20, seed=seed)
                results.append(out.choices[0].text)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(results) == 4
    assert len(server.pool.engine_pids()) == 1  # one engine served them one after another


def test_stopping_mid_stream_ends_streams_queues_and_engines(start_server, tiny_files):
    server = start_server()
    model = name_of(tiny_files["Q8_0"])
    outcomes: dict[str, str] = {}
    reading = threading.Event()

    def slow_stream() -> None:
        try:
            with _client(server) as c:
                stream = c.chat.completions.create(
                    model=model,
                    messages=PROMPT,
                    max_tokens=3000,
                    stream=True,
                    extra_body={"ignore_eos": True},
                )
                for _chunk in stream:
                    reading.set()
                    time.sleep(0.002)  # a reader slower than the engine
            outcomes["stream"] = "ended"
        except Exception as exc:
            outcomes["stream"] = type(exc).__name__

    def queued() -> None:
        try:
            with _client(server) as c:
                c.completions.create(model=model, prompt="hi", max_tokens=2)
            outcomes["queued"] = "answered"
        except Exception as exc:
            outcomes["queued"] = type(exc).__name__

    threads = [threading.Thread(target=slow_stream)]
    threads[0].start()
    assert reading.wait(60)
    threads.append(threading.Thread(target=queued))
    threads[1].start()
    time.sleep(0.3)  # the second request waits in the model's queue
    pids = server.pool.engine_pids()
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 5  # streams are ended first: no graceful-shutdown wait
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    assert set(outcomes) == {"stream", "queued"}
    assert all(_gone(p) for p in pids)
    assert not server.pool.loaded() and not server.pool.engine_pids()


def test_workers_are_asked_only_for_a_model_that_does_not_fit_here(start_server, tiny_files):
    from app.core.rpc import free_port

    dead = f"127.0.0.1:{free_port()}"  # nothing listens: consulting it would fail the load
    server = start_server(workers=(dead,))
    with _client(server) as c:
        out = c.chat.completions.create(
            model=name_of(tiny_files["Q8_0"]), messages=PROMPT, max_tokens=4
        )
    assert out.choices[0].message.content is not None
    slot = next(iter(server.pool._slots.values()))
    assert slot.plan.rpc_servers == ()  # the tiny model fits this machine: loaded here alone
