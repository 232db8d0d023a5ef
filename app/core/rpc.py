"""Workers: llama.cpp's RPC backend (``ggml-rpc``) through ctypes -- serve a device, probe one.

A worker is llama.cpp's own RPC server (``ggml_backend_rpc_start_server``, as the vendored
``tools/rpc/rpc-server.cpp`` starts it) running in a process of its own; the engine registers each
worker's devices (``ggml_backend_rpc_add_server`` + ``ggml_backend_register``, as llama.cpp's
``--rpc`` does) and llama.cpp places layers on them.  No protocol is written here.

Two properties of ggml-rpc shape this module:

* A client that cannot reach a server, or loses it, calls ``GGML_ABORT``: the process dies.  So a
  probe runs in a child process (``python -m app.core.rpc probe ADDR``) behind a plain TCP check,
  and the engine checks each worker the same way before it registers it.
* The server has no authentication and serves one client at a time.  The worker binds to loopback
  unless told otherwise (see :func:`check_bind_address`), and a probe of a worker that is busy
  with another client times out and says so.

``--mem``: the RPC server answers "how much memory is free" with its device's figure.  To make a
worker offer less than the whole machine, the served device is a copy of the real one whose
``get_memory`` reports the limit (the real device does all the work); the split planner then keeps
that worker's layers within the limit.  The limit is what the worker advertises, not a cap ggml
enforces on allocations.
"""

from __future__ import annotations

import ctypes
import importlib.util
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app.core.errors import ErrorKind, QuantDeskError

DEFAULT_PORT = 50052
PROBE_TIMEOUT_S = 8.0
CONNECT_TIMEOUT_S = 2.0
EXPOSED_WARNING = (
    "WARNING: this worker accepts connections from other computers.  llama.cpp's RPC protocol has "
    "no authentication and no encryption: anyone who can reach {addr} can run computations on this "
    "machine, read and overwrite the model data it holds, and may crash it.  Use it only on a "
    "network you trust, never on the internet; the safe way from another computer is an SSH "
    "tunnel to a worker on 127.0.0.1 (ssh -N -L {port}:127.0.0.1:{port} THIS-HOST)."
)


class WorkerError(QuantDeskError):
    """A worker address is malformed, refused, unreachable, busy or not a llama.cpp RPC server."""

    default_kind = ErrorKind.REQUEST


# ---- addresses ------------------------------------------------------------------------------


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) -> (host, port); a bare host gets the default port."""
    s = text.strip()
    if not s:
        raise WorkerError("an empty worker address")
    if s.startswith("["):
        host, _, rest = s[1:].partition("]")
        port_s = rest[1:] if rest.startswith(":") else ""
    elif s.count(":") == 1:
        host, port_s = s.split(":")
    else:
        host, port_s = s, ""
    if not host or any(c.isspace() for c in host):
        raise WorkerError(f"worker address {text!r}: no host")
    try:
        port = int(port_s) if port_s else DEFAULT_PORT
    except ValueError:
        raise WorkerError(f"worker address {text!r}: the port is not a number") from None
    if not 0 < port < 65536:
        raise WorkerError(f"worker address {text!r}: port {port} is out of range")
    return host, port


def endpoint(text: str) -> str:
    """The canonical ``host:port`` string ggml-rpc is given (and names buffers with)."""
    host, port = parse_address(text)
    return f"{host}:{port}"


def parse_workers(text: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """``"a:1,b:2"`` or a list -> canonical endpoints, duplicates dropped, order kept."""
    if not text:
        return ()
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for item in items:
        if item.strip():
            ep = endpoint(item)
            if ep not in out:
                out.append(ep)
    return tuple(out)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; names are not resolved (a LAN name is not)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind_address(host: str, allow_any: bool) -> str | None:
    """Refuse a non-loopback bind without ``allow_any``; with it, return the warning to print."""
    if is_loopback(host):
        return None
    if not allow_any:
        what = "every network interface" if host in ("0.0.0.0", "::", "") else f"address {host}"
        raise WorkerError(
            f"refusing to listen on {what}: llama.cpp's RPC has no authentication, so anyone who "
            "can reach it can use and crash this worker.  Reach it through an SSH tunnel "
            "(the worker stays on 127.0.0.1), or pass --allow-any-address on a network you trust."
        )
    return EXPOSED_WARNING


def tcp_check(addr: str, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """None when something listens at ``addr``; otherwise why not, in words."""
    host, port = parse_address(addr)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except ConnectionRefusedError:
        return f"connection refused (no worker is listening on {host}:{port})"
    except TimeoutError:
        return f"no answer within {timeout:g} s (the computer is off, or a firewall drops it)"
    except socket.gaierror as exc:
        return f"the host name {host!r} does not resolve ({exc.strerror})"
    except OSError as exc:
        return f"unreachable ({exc.strerror or exc})"


# ---- the ggml libraries -----------------------------------------------------------------------


def lib_dir() -> Path:
    """The folder with llama-cpp-python's shared libraries (found without importing it)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise WorkerError("llama-cpp-python is not installed", ErrorKind.INTERNAL)
    return Path(list(spec.submodule_search_locations)[0]) / "lib"


def _load(base: str) -> ctypes.CDLL:
    folder = lib_dir()
    # The versioned name first: it is the one libllama links (its soname).  The wheel holds copies,
    # not symlinks, so opening ``libggml.so`` would load a second ggml with its own device registry.
    names = (f"lib{base}.so.0", f"lib{base}.0.dylib", f"lib{base}.so", f"lib{base}.dylib")
    for name in (*names, f"{base}.dll", f"lib{base}.dll"):
        if (folder / name).exists():
            mode = getattr(ctypes, "RTLD_GLOBAL", 0)
            return ctypes.CDLL(str(folder / name), mode=mode)
    raise WorkerError(
        f"this llama.cpp build has no {base} library in {folder}: reinstall llama-cpp-python "
        "with -DGGML_RPC=ON (bootstrap.py does)",
        ErrorKind.INTERNAL,
    )


class Ggml:
    """The few ggml functions a worker and a probe need, typed for ctypes."""

    def __init__(self) -> None:
        self.base = _load("ggml-base")
        self.ggml = _load("ggml")
        self.rpc = _load("ggml-rpc")
        p, s = ctypes.c_void_p, ctypes.c_size_t
        sz = ctypes.POINTER(ctypes.c_size_t)
        for lib in (self.ggml, self.base):
            for name, res, args in (
                ("ggml_backend_dev_count", s, []),
                ("ggml_backend_dev_get", p, [s]),
                ("ggml_backend_dev_by_name", p, [ctypes.c_char_p]),
                ("ggml_backend_dev_name", ctypes.c_char_p, [p]),
                ("ggml_backend_dev_description", ctypes.c_char_p, [p]),
                ("ggml_backend_dev_memory", None, [p, sz, sz]),
                ("ggml_backend_reg_dev_count", s, [p]),
                ("ggml_backend_reg_dev_get", p, [p, s]),
                ("ggml_backend_register", None, [p]),
            ):
                if hasattr(lib, name):
                    fn = getattr(lib, name)
                    fn.restype, fn.argtypes = res, args
        self.rpc.ggml_backend_rpc_add_server.restype = p
        self.rpc.ggml_backend_rpc_add_server.argtypes = [ctypes.c_char_p]
        self.rpc.ggml_backend_rpc_start_server.restype = None
        self.rpc.ggml_backend_rpc_start_server.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            s,
            s,
            ctypes.POINTER(p),
        ]

    def fn(self, name: str) -> Any:
        return getattr(self.ggml, name) if hasattr(self.ggml, name) else getattr(self.base, name)

    def memory(self, dev: int) -> tuple[int, int]:
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        self.fn("ggml_backend_dev_memory")(dev, ctypes.byref(free), ctypes.byref(total))
        return int(free.value), int(total.value)

    def devices(self) -> list[str]:
        n = self.fn("ggml_backend_dev_count")()
        return [
            self.fn("ggml_backend_dev_name")(self.fn("ggml_backend_dev_get")(i)).decode()
            for i in range(n)
        ]


# ---- serving ----------------------------------------------------------------------------------

# struct ggml_backend_device_i (ggml-backend-impl.h): 15 function pointers, get_memory the third;
# struct ggml_backend_device = {iface, reg, context}; struct ggml_backend = {guid, iface (16
# function pointers), device, context}.  Checked against the vendored header of this build.
_DEV_IFACE_SLOTS = 15
_GET_MEMORY, _INIT_BACKEND = 2, 5
_BACKEND_DEVICE_OFFSET = (1 + 16) * ctypes.sizeof(ctypes.c_void_p)

_GetMemory = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)
)
_InitBackend = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p)


class _Device(ctypes.Structure):
    _fields_ = [
        ("iface", ctypes.c_void_p * _DEV_IFACE_SLOTS),
        ("reg", ctypes.c_void_p),
        ("context", ctypes.c_void_p),
    ]


def limited_device(g: Ggml, real: int, limit: int) -> tuple[int, list[Any]]:
    """A copy of device ``real`` that reports at most ``limit`` bytes (free and total).

    The backend it creates is the real device's, pointed back at the copy, so that the RPC
    server's "free memory" answer (``ggml_backend_get_device(backend)``) comes from here.
    Returns the copy's address and the objects that must stay alive while it is served.
    """
    src = _Device.from_address(real)
    copy = _Device()
    ctypes.memmove(ctypes.addressof(copy), real, ctypes.sizeof(_Device))
    orig_init = _InitBackend(src.iface[_INIT_BACKEND])

    def get_memory(dev: int, free: Any, total: Any) -> None:
        f, _ = g.memory(real)
        free[0] = min(f, limit)
        total[0] = limit

    def init_backend(dev: int, params: bytes | None) -> int:
        backend = orig_init(real, params)
        if backend:
            ctypes.c_void_p.from_address(backend + _BACKEND_DEVICE_OFFSET).value = ctypes.addressof(
                copy
            )
        return int(backend or 0)

    cb_mem, cb_init = _GetMemory(get_memory), _InitBackend(init_backend)
    copy.iface[_GET_MEMORY] = ctypes.cast(cb_mem, ctypes.c_void_p).value
    copy.iface[_INIT_BACKEND] = ctypes.cast(cb_init, ctypes.c_void_p).value
    return ctypes.addressof(copy), [copy, cb_mem, cb_init, orig_init]


def resolve_device(g: Ggml, name: str) -> int:
    """The device called ``name`` (``cpu``, ``cuda0``, ... case-insensitive), or a clear error."""
    names = g.devices()
    for i, n in enumerate(names):
        if n.lower() == name.lower():
            return int(g.fn("ggml_backend_dev_get")(i))
    raise WorkerError(
        f"no device {name!r} in this llama.cpp build; it has: "
        + ", ".join(n for n in names if not n.upper().startswith("RPC"))
    )


def serve(
    host: str, port: int, device: str = "cpu", mem: int | None = None, n_threads: int = 0
) -> None:
    """Run llama.cpp's RPC server in this process until it is killed (Ctrl-C works)."""
    g = Ggml()
    dev = resolve_device(g, device)
    keep: list[Any] = []
    if mem:
        dev, keep = limited_device(g, dev, mem)
    devs = (ctypes.c_void_p * 1)(dev)
    threads = n_threads or max(1, (os.cpu_count() or 2) // 2)
    # The server loop never returns to Python: let Ctrl-C end the process as it would a C program.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    g.rpc.ggml_backend_rpc_start_server(f"{host}:{port}".encode(), None, threads, 1, devs)
    del keep
    # start_server returns only when it could not listen (port taken, bad address).
    raise WorkerError(f"the worker could not listen on {host}:{port} (is the port in use?)")


def start_worker(
    port: int,
    *,
    host: str = "127.0.0.1",
    mem: int | None = None,
    device: str = "cpu",
    threads: int = 1,
    timeout: float = 30.0,
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``python -m app worker`` in a child process; return once it accepts connections."""
    cmd = [sys.executable, "-m", "app", "worker", "--host", host, "--port", str(port)]
    cmd += ["--device", device, "--threads", str(threads)]
    if mem:
        cmd += ["--mem", str(mem)]
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        if log:
            out.close()  # type: ignore[union-attr]
    deadline = time.monotonic() + timeout
    addr = f"{host}:{port}"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise WorkerError(f"the worker for {addr} exited at start (code {proc.returncode})")
        if tcp_check(addr, 0.5) is None:
            return proc
        time.sleep(0.1)
    proc.kill()
    proc.wait(5)
    raise WorkerError(f"the worker for {addr} did not start listening within {timeout:g} s")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- probing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerDevice:
    """One device a worker serves, as ggml's device API on the RPC registry reports it."""

    name: str
    description: str
    free_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class WorkerInfo:
    """A probe's answer: reachable or not (``error``), the devices, and the round-trip latency."""

    address: str
    ok: bool
    error: str = ""
    devices: tuple[WorkerDevice, ...] = field(default_factory=tuple)
    latency_ms: float = 0.0
    probe_s: float = 0.0

    @property
    def free_bytes(self) -> int:
        return sum(d.free_bytes for d in self.devices)

    @property
    def total_bytes(self) -> int:
        return sum(d.total_bytes for d in self.devices)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["free_bytes"], d["total_bytes"] = self.free_bytes, self.total_bytes
        return d


def _probe_here(addr: str, rounds: int = 5) -> dict[str, Any]:
    """In a throwaway process: register the server's devices, read their memory, time round trips."""
    g = Ggml()
    reg = g.rpc.ggml_backend_rpc_add_server(addr.encode())
    if not reg:
        return {"error": "the worker serves no device"}
    devices, times = [], []
    for i in range(g.fn("ggml_backend_reg_dev_count")(reg)):
        dev = g.fn("ggml_backend_reg_dev_get")(reg, i)
        free, total = g.memory(dev)
        devices.append(
            {
                "name": g.fn("ggml_backend_dev_name")(dev).decode(),
                "description": g.fn("ggml_backend_dev_description")(dev).decode(),
                "free_bytes": free,
                "total_bytes": total,
            }
        )
        for _ in range(rounds):  # each memory query is one request and one reply
            t = time.perf_counter()
            g.memory(dev)
            times.append(time.perf_counter() - t)
    return {"devices": devices, "latency_ms": 1000 * sorted(times)[len(times) // 2]}


def probe(addr: str, timeout: float = PROBE_TIMEOUT_S) -> WorkerInfo:
    """Devices, free/total memory and latency of the worker at ``addr``; never raises for it."""
    t0 = time.perf_counter()
    try:
        ep = endpoint(addr)
    except WorkerError as exc:
        return WorkerInfo(addr, False, str(exc))
    why = tcp_check(ep, min(timeout, CONNECT_TIMEOUT_S))
    if why:
        return WorkerInfo(ep, False, why, probe_s=time.perf_counter() - t0)
    env = dict(os.environ, GGML_NO_BACKTRACE="1")
    cmd = [sys.executable, "-m", "app.core.rpc", "probe", ep]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return WorkerInfo(
            ep,
            False,
            f"it accepts connections but did not answer within {timeout:g} s (busy serving "
            "another client -- a worker serves one at a time -- or not a llama.cpp RPC server)",
            probe_s=time.perf_counter() - t0,
        )
    elapsed = time.perf_counter() - t0
    lines = [ln for ln in done.stdout.decode(errors="replace").splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return WorkerInfo(ep, False, f"the probe failed: {tail[0][:300]}", probe_s=elapsed)
    data = json.loads(lines[-1])
    if data.get("error"):
        return WorkerInfo(ep, False, str(data["error"]), probe_s=elapsed)
    devs = tuple(WorkerDevice(**d) for d in data["devices"])
    return WorkerInfo(ep, True, "", devs, float(data["latency_ms"]), elapsed)


def probe_all(
    addrs: list[str] | tuple[str, ...], timeout: float = PROBE_TIMEOUT_S
) -> list[WorkerInfo]:
    """Probe several workers at once (each in its own process); results in the given order."""
    from concurrent.futures import ThreadPoolExecutor

    if not addrs:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(addrs))) as pool:
        return list(pool.map(lambda a: probe(a, timeout), addrs))


# ---- the engine side --------------------------------------------------------------------------

_registered: list[str] = []


def register_servers(addrs: tuple[str, ...], timeout: float = PROBE_TIMEOUT_S) -> None:
    """Make each worker's devices llama.cpp devices in this process (the engine child).

    Each is probed first in a child process: ggml-rpc aborts the whole process on a refused
    connection and waits forever on a busy worker, and this process holds the user's model.
    """
    todo = [a for a in addrs if a not in _registered]
    if not todo:
        return
    for info in probe_all(todo, timeout):
        if not info.ok:
            raise WorkerError(f"worker {info.address}: {info.error}", ErrorKind.LOAD)
    g = Ggml()
    for addr in todo:
        reg = g.rpc.ggml_backend_rpc_add_server(addr.encode())
        if not reg:
            raise WorkerError(f"worker {addr} serves no device", ErrorKind.LOAD)
        g.fn("ggml_backend_register")(reg)
        _registered.append(addr)


def registered() -> tuple[str, ...]:
    """The workers registered in this process so far (ggml has no way to unregister one)."""
    return tuple(_registered)


def explain_lost_workers(addrs: tuple[str, ...], message: str) -> str:
    """Name the workers behind an engine that died while using them (ggml only says "crashed")."""
    gone = [(a, why) for a in addrs if (why := tcp_check(a, 1.0))]
    if gone:
        names = "; ".join(f"worker {a}: {why}" for a, why in gone)
        return (
            f"Lost {names}. The model was split over workers and cannot go on without it. {message}"
        )
    if "RPC" in message or "Remote" in message:
        return (
            f"A worker ({', '.join(addrs)}) stopped answering in the middle of a request. {message}"
        )
    return message


def _main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "probe":
        try:
            print(json.dumps(_probe_here(argv[1])), flush=True)
        except WorkerError as exc:
            print(json.dumps({"error": str(exc)}), flush=True)
        return 0
    print("usage: python -m app.core.rpc probe HOST:PORT", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
