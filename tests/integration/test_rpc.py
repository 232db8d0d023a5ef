"""Workers over loopback: a model split over two real RPC worker processes and this machine."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.core import rpc, split
from app.core.engine import Engine
from app.core.engine.client import EngineCrashed
from app.core.engine.protocol import GenerateRequest, Sampling
from app.core.fit import Budget
from app.core.planning import PlanError, Planner, PlanOptions
from tests import modelfactory

N_CTX = 512
GREEDY = Sampling.preset("greedy")


def _budgets(planner, path):
    """Local RAM for one layer, each worker room for one layer: the plan needs both workers."""
    spec = planner.spec(path)
    dry = planner.dry_fn(path, spec, PlanOptions())(N_CTX, 0)
    per, out, embd = split.layer_weights(spec)
    kv_layer = dry.kv_bytes // spec.n_layer
    layer = (
        max(per) + kv_layer + out // 2
    )  # one layer (and its KV cache), never a layer and the head
    fixed = embd + dry.cpu_compute_bytes + dry.output_bytes + dry.base_rss_bytes
    ram = Budget(ram_bytes=fixed + layer + 512 * 1024 * 1024, vram_bytes=0)
    worker = int(dry.cpu_compute_bytes * split.WORKER_COMPUTE_FACTOR) + split.WORKER_MARGIN + layer
    return ram, worker


@pytest.fixture
def two_workers(planner):
    path = modelfactory.model_path("Q8_0")
    ram, mem = _budgets(planner, path)
    procs = []
    try:
        for _ in range(2):
            procs.append(rpc.start_worker(rpc.free_port(), mem=mem))
        yield path, ram, procs
    finally:
        for p in procs:
            p.kill()
            p.wait(10)


def _addr(p: subprocess.Popen[bytes]) -> str:
    return f"127.0.0.1:{p.args[p.args.index('--port') + 1]}"  # type: ignore[index, union-attr]


def test_split_over_two_workers_matches_local(planner, two_workers, tmp_path):
    path, ram, procs = two_workers
    addrs = [_addr(p) for p in procs]
    plan = planner.plan_load(path, N_CTX, budget=ram, workers=addrs)
    assert plan.verdict == "split" and plan.rpc_servers == tuple(addrs), plan.reason
    assert plan.split.n_computers == 3 and "split over 3 computers" in plan.reason
    counts = [s.n_layers for s in plan.split.shares]
    assert counts == [1, 1, 1]  # layer 0 here, layer 1 on worker 1, the output layer on worker 2
    req = GenerateRequest(
        prompt="The quick brown fox", max_tokens=24, sampling=GREEDY, stream=False
    )
    with Engine(log_dir=tmp_path) as e:
        info = e.load(path, n_threads=1, **plan.load_kwargs())
        for share in plan.split.shares[1:]:
            got = info.buffers[f"RPC0[{share.address}] model"]
            assert abs(got - share.weights_bytes) <= 0.02 * share.weights_bytes + 20_000, share
        kv_worker = plan.split.shares[1]  # layer 1's KV cache lives with layer 1, on worker 1
        assert info.buffers[f"RPC0[{kv_worker.address}] KV"] == kv_worker.kv_bytes
        assert (
            f"RPC0[{plan.split.shares[2].address}] KV" not in info.buffers
        )  # the output layer: none
        here = plan.split.shares[0].weights_bytes  # the log prints MiB with two decimals
        assert abs(info.buffers["CPU_Mapped model"] - here) <= 0.02 * here + 20_000
        split_reply = e.complete(req)
        e.load(path, n_ctx=plan.n_ctx, n_threads=1)  # a local load: a fresh child, no workers
        assert not any(k.startswith("RPC") for k in e.loaded.buffers)
        local_reply = e.complete(req)
    assert split_reply.tokens == local_reply.tokens == 24
    assert split_reply.text == local_reply.text


def test_worker_killed_mid_generation(planner, two_workers, tmp_path):
    path, ram, procs = two_workers
    addrs = [_addr(p) for p in procs]
    plan = planner.plan_load(path, N_CTX, budget=ram, workers=addrs)
    req = GenerateRequest(prompt="Hi", max_tokens=4000, sampling=GREEDY, ignore_eos=True)
    with Engine(log_dir=tmp_path) as e:
        e.load(path, n_threads=1, **plan.load_kwargs())
        gen = e.generate(req)
        next(gen)
        procs[1].kill()
        procs[1].wait(10)
        with pytest.raises(EngineCrashed) as err:
            for _ in gen:
                pass
        assert f"worker {addrs[1]}" in str(err.value) and "refused" in str(err.value)
        e.load(path, n_ctx=N_CTX, n_threads=1)
        again = e.complete(
            GenerateRequest(prompt="Hi", max_tokens=8, sampling=GREEDY, stream=False)
        )
        assert again.tokens == 8


def test_unreachable_worker_is_named_by_the_plan(planner):
    path = modelfactory.model_path("Q8_0")
    dead = f"127.0.0.1:{rpc.free_port()}"
    with pytest.raises(PlanError) as err:
        planner.plan_load(path, N_CTX, workers=[dead])
    assert f"worker {dead}" in str(err.value) and "connection refused" in str(err.value)
    info = rpc.probe(dead, timeout=2)
    assert not info.ok and "refused" in info.error


def test_worker_refuses_open_address_without_the_flag():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "worker",
            "--host",
            "0.0.0.0",
            "--port",
            str(rpc.free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "no authentication" in out.stderr and "SSH" in out.stderr
    with pytest.raises(rpc.WorkerError):
        rpc.check_bind_address("192.168.1.5", allow_any=False)
    assert rpc.check_bind_address("192.168.1.5", allow_any=True)
    assert rpc.check_bind_address("127.0.0.1", allow_any=False) is None


def test_plan_cli_splits_over_workers_and_names_a_dead_one(planner, two_workers):
    import json

    path, _, procs = two_workers
    addrs = ",".join(_addr(p) for p in procs)
    with Planner() as own:  # the default dry-run cache, which the command below then reads
        ram, _ = _budgets(own, path)
    cmd = [sys.executable, "-m", "app", "plan", str(path), "--ctx", str(N_CTX)]
    cmd += ["--ram-budget", str(ram.ram_bytes), "--vram-budget", "0", "--json"]
    out = subprocess.run([*cmd, "--workers", addrs], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["verdict"] == "split" and data["n_computers"] == 3
    assert [s["address"] for s in data["shares"] if s["kind"] == "worker"] == addrs.split(",")
    dead = f"127.0.0.1:{rpc.free_port()}"
    out = subprocess.run([*cmd, "--workers", dead], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and f"worker {dead}" in out.stderr and "refused" in out.stderr


def test_split_planner_orders_devices_as_llama_cpp_does(planner):
    """GPU from the end (output layer), RAM from the start, workers in between; shares add up."""
    path = modelfactory.model_path("Q8_0")
    spec = planner.spec(path)
    dry = planner.dry_fn(path, spec, PlanOptions())(N_CTX, 0)
    per, out, embd = split.layer_weights(spec)
    off = int(dry.cpu_compute_bytes * split.WORKER_COMPUTE_FACTOR)
    fixed = embd + dry.cpu_compute_bytes + dry.output_bytes + dry.base_rss_bytes
    kv_layer = dry.kv_bytes // spec.n_layer
    devices = [
        split.SplitDevice("gpu", "gpu", off + out + 1000),  # the output layer only
        split.SplitDevice("ram", "ram", fixed + per[0] + kv_layer + 1000),  # layer 0 only
        split.SplitDevice("w", "worker", off + split.WORKER_MARGIN + 10 * max(per), "127.0.0.1:1"),
    ]
    sp = split.plan_split(spec, dry, N_CTX, devices)
    assert sp.fits and [s.n_layers for s in sp.shares] == [1, 1, 1]
    assert [s.kind for s in sp.shares] == ["ram", "worker", "gpu"]
    assert (
        sp.n_gpu_layers == 2
        and sp.tensor_split == (1.0, 1.0)
        and sp.rpc_servers == ("127.0.0.1:1",)
    )
    assert sum(s.weights_bytes for s in sp.shares) == sum(t.nbytes for t in spec.tensors)
    assert all(s.total_bytes <= s.budget_bytes for s in sp.shares)
    # A worker too small for anything: the plan says how much is missing, and loads nothing there.
    small = [devices[1], split.SplitDevice("w", "worker", off, "127.0.0.1:1")]
    sp = split.plan_split(spec, dry, N_CTX, small)
    assert not sp.fits and "2 of 3 layers have no place" in sp.reason


def test_compare_runs_unchanged_on_variants_split_over_workers(planner, two_workers, tmp_path):
    import dataclasses
    import shutil

    from app.core.compare import CompareOptions, Finished, PlanReady, run_compare
    from app.core.taskeval import PromptItem

    path, ram, procs = two_workers
    twin = tmp_path / "twin-Q8_0.gguf"
    shutil.copyfile(path, twin)
    # This machine as one with only the RAM of the split plan: each variant needs the workers.
    small = dataclasses.replace(planner.profile(), ram_available_bytes=ram.ram_bytes, gpus=[])
    options = CompareOptions(
        max_tokens=12, reference_text="", n_ctx=N_CTX, workers=tuple(_addr(p) for p in procs)
    )
    with Planner(small, runner=planner.runner) as limited:
        assert limited.plan_load(path, N_CTX, workers=options.workers).verdict == "split"
        events = list(
            run_compare(
                [path, twin], [PromptItem.single("The quick brown fox")], options=options,
                reference=path, planner=limited,
            )
        )  # fmt: skip
    plan = next(e for e in events if isinstance(e, PlanReady)).plan
    assert plan.mode == "sequential" and "workers serve one model at a time" in plan.reason
    report = events[-1].report if isinstance(events[-1], Finished) else None
    assert report is not None
    assert [r.error for r in report.results] == [None, None]
    assert report.results[0].text and report.results[1].text == report.results[0].text
    assert report.results[1].reply["kld_mean"] == pytest.approx(0.0, abs=1e-6)


def test_a_variant_too_big_here_is_planned_split_over_the_workers(planner, two_workers, hub):
    import dataclasses

    from app.core import hub as hub_api
    from app.core.planning import PlannedVariant
    from app.ui.pages.models.table import fit_badge
    from tests.hub_fixtures import TINY_REPO

    path, ram, procs = two_workers
    # Room here for one layer, with 256 KB of slack: the runtime figure moves a little between
    # the dry runs of one engine, and the plan is exact to the layer.
    slack = 256 * 1024
    small = dataclasses.replace(
        planner.profile(), ram_available_bytes=ram.ram_bytes + slack, gpus=[]
    )
    variants = [v for v in hub_api.list_variants(TINY_REPO) if v.quant == "Q8_0"]
    addrs = [_addr(p) for p in procs]
    with Planner(small, runner=planner.runner) as limited:
        alone = [i for i in limited.plan_variants(variants, N_CTX) if isinstance(i, PlannedVariant)]
        spread = [
            i
            for i in limited.plan_variants(variants, N_CTX, workers=addrs)
            if isinstance(i, PlannedVariant)
        ]
    assert alone[0].offload.verdict == "no_fit" and alone[0].split is None
    assert fit_badge(alone[0])[0] == "no_fit"
    assert spread[0].split is not None, spread[0].split_error
    assert spread[0].split.verdict == "split"
    assert fit_badge(spread[0]) == ("split", "Split over 3 computers")
