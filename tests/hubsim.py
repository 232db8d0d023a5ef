"""A small imitation of the Hugging Face Hub on 127.0.0.1, for tests and benchmarks.

It speaks the parts of the Hub protocol that huggingface_hub 2.x and QuantDesk use (DESIGN.md 5):

* ``GET /api/models?search=&filter=gguf&sort=downloads&limit=&author=`` -- repo search, paginated
  with a ``Link: <...>; rel="next"`` header;
* ``GET /api/models/{repo}[/revision/{rev}]`` (``blobs=true`` adds sizes and LFS sha256);
* ``GET /api/models/{repo}/tree/{rev}[/{path}]`` -- the file list with LFS oids;
* ``HEAD|GET /{repo}/resolve/{rev}/{file}`` -- 200 with ``X-Repo-Commit``, ``X-Linked-Etag`` (sha256),
  ``X-Linked-Size``; ``Range: bytes=N-[M]`` gives 206 + ``Content-Range``;
* errors with ``X-Error-Code`` (RepoNotFound, EntryNotFound, RevisionNotFound, GatedRepo);
* ``hub.redirect = True``: resolve answers 302 (with the ``X-Linked-*`` headers) to
  ``{hub.cdn_endpoint}/cdn/{sha256}`` on another port, as the real Hub does for LFS files (tokens
  reaching it are recorded in ``hub.auth_at_cdn``); ``hub.honor_range = False``: Range is ignored (200, whole file).

Usage::

    with HubSim({"acme/tiny-GGUF": {"tiny-Q4_K_M.gguf": path}}, gated={"acme/secret"}) as hub:
        os.environ["HF_ENDPOINT"] = hub.endpoint      # or pass endpoint= to the client
        hub.throttle(1_000_000)                       # bytes per second for file bodies
        hub.drop_after("tiny-Q4_K_M.gguf", 300_000)   # next GET closes after 300 kB of body
        hub.flip_byte("tiny-Q4_K_M.gguf", 1234)       # serve that byte XOR 0xFF (headers stay true)
        hub.fail(503, times=2, match="/resolve/")     # the next 2 matching requests answer 503
        ...
        hub.bytes_served["acme/tiny-GGUF/tiny-Q4_K_M.gguf"]   # body bytes written to sockets
        hub.requests                                  # [(method, path, range header or None)]

Gated repos need ``Authorization: Bearer <hub.token>`` (default ``"hf_test_token"``) for file
requests: no token answers 401, a wrong one 403, both with ``X-Error-Code: GatedRepo``.  File
contents are Paths (read on demand, so a 500 MB benchmark file is not held in memory) or bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

Content = Path | bytes
_CHUNK = 64 * 1024
_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class _Fault:
    status: int
    times: int
    match: str
    error_code: str | None


@dataclass
class _Repo:
    files: dict[str, Content]
    commit: str
    downloads: int
    gated: bool
    sha256: dict[str, str] = field(default_factory=dict)


def _size(content: Content) -> int:
    return content.stat().st_size if isinstance(content, Path) else len(content)


def _sha256(content: Content) -> str:
    if isinstance(content, bytes):
        return hashlib.sha256(content).hexdigest()
    h = hashlib.sha256()
    with content.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class HubSim:
    """The imitation server; a context manager that serves on a random loopback port."""

    def __init__(
        self,
        repos: dict[str, dict[str, Content]] | None = None,
        *,
        gated: set[str] | frozenset[str] = frozenset(),
        downloads: dict[str, int] | None = None,
        token: str = "hf_test_token",
        page_size: int = 50,
    ) -> None:
        self.token = token
        self.page_size = page_size
        self.repos: dict[str, _Repo] = {}
        self.bytes_served: Counter[str] = Counter()
        self.requests: list[tuple[str, str, str | None]] = []
        self._faults: list[_Fault] = []
        self._drops: dict[str, list[int]] = {}
        self._flips: dict[str, set[int]] = {}
        self._rate: float | None = None
        # Like the real Hub's LFS files: resolve answers 302 to a CDN URL that serves the bytes.
        self.redirect = False
        # False imitates a server that ignores Range and always sends the whole file.
        self.honor_range = True
        self._lock = threading.Lock()
        for repo_id, files in (repos or {}).items():
            self.add_repo(
                repo_id,
                files,
                gated=repo_id in gated,
                downloads=(downloads or {}).get(repo_id, 1000),
            )
        self._server: ThreadingHTTPServer | None = None
        self._cdn: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        # Authorization headers that reached the CDN (must stay empty: tokens stay on the Hub).
        self.auth_at_cdn: list[str] = []

    # -- configuration -------------------------------------------------------------------------
    def add_repo(
        self, repo_id: str, files: dict[str, Content], *, gated: bool = False, downloads: int = 1000
    ) -> None:
        """Add (or replace) a repo; its commit id is derived from its name and file hashes."""
        repo = _Repo(dict(files), "", downloads, gated)
        repo.sha256 = {name: _sha256(c) for name, c in repo.files.items()}
        seed = repo_id + "".join(f"{n}:{s}" for n, s in sorted(repo.sha256.items()))
        repo.commit = hashlib.sha1(seed.encode()).hexdigest()
        with self._lock:
            self.repos[repo_id] = repo

    def throttle(self, bytes_per_second: float | None) -> None:
        """Limit the speed of every file body (None: as fast as loopback goes)."""
        self._rate = bytes_per_second

    def drop_after(self, filename: str, nbytes: int, times: int = 1) -> None:
        """The next ``times`` GETs of ``filename`` (any repo) close the socket after ``nbytes``."""
        with self._lock:
            self._drops.setdefault(filename, []).extend([nbytes] * times)

    def flip_byte(self, filename: str, offset: int) -> None:
        """Serve byte ``offset`` of ``filename`` inverted, while headers keep the true sha256."""
        with self._lock:
            self._flips.setdefault(filename, set()).add(offset)

    def fail(
        self, status: int, *, times: int = 1, match: str = "", error_code: str | None = None
    ) -> None:
        """The next ``times`` requests whose path contains ``match`` answer ``status``."""
        with self._lock:
            self._faults.append(_Fault(status, times, match, error_code))

    def sha256(self, repo_id: str, filename: str) -> str:
        return self.repos[repo_id].sha256[filename]

    def commit(self, repo_id: str) -> str:
        return self.repos[repo_id].commit

    def served(self, repo_id: str, filename: str) -> int:
        return self.bytes_served[f"{repo_id}/{filename}"]

    def file_requests(self, filename: str, method: str = "GET") -> list[str | None]:
        """The Range headers of the requests for ``filename`` (None when the whole file)."""
        tail = "/" + filename
        return [
            r for m, p, r in self.requests if m == method and "/resolve/" in p and p.endswith(tail)
        ]

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        assert self._server is not None, "start the HubSim first (use it as a context manager)"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def cdn_endpoint(self) -> str:
        """The "CDN" that redirected file downloads go to: another origin (port), like the Hub's."""
        assert self._cdn is not None, "start the HubSim first"
        host, port = self._cdn.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubSim:
        sim = self

        class Handler(_Handler):
            hub = sim

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._cdn = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        for server in (self._server, self._cdn):
            server.daemon_threads = True
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in (self._server, self._cdn):
            if server is not None:
                server.shutdown()
                server.server_close()
        self._server = self._cdn = None
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()

    def __enter__(self) -> HubSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- used by the handler --------------------------------------------------------------------
    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and fault.match in path:
                    fault.times -= 1
                    return fault
        return None

    def _take_drop(self, filename: str) -> int | None:
        with self._lock:
            pending = self._drops.get(filename)
            return pending.pop(0) if pending else None


class _Handler(BaseHTTPRequestHandler):
    hub: HubSim
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    # -- plumbing -------------------------------------------------------------------------------
    def _route(self, head: bool) -> None:
        url = urlsplit(self.path)
        path = url.path
        query = {k: v for k, v in parse_qs(url.query).items()}
        with self.hub._lock:
            self.hub.requests.append((self.command, unquote(path), self.headers.get("Range")))
        fault = self.hub._take_fault(path)
        if fault is not None:
            self._error(fault.status, fault.error_code, f"injected {fault.status}", head)
            return
        parts = [unquote(p) for p in path.strip("/").split("/")]
        try:
            if parts[:2] == ["api", "models"] and len(parts) == 2:
                self._search(query, head)
            elif parts[:2] == ["api", "models"] and len(parts) >= 4:
                self._api_repo(parts[2:], query, head)
            elif len(parts) == 2 and parts[0] == "cdn":
                self._cdn(parts[1], query, head)
            elif len(parts) >= 5 and parts[2] == "resolve":
                self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), head)
            else:
                self._error(404, None, "no such route", head)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send(
        self, status: int, body: bytes, headers: dict[str, str] | None = None, head: bool = False
    ) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(
        self, obj: Any, head: bool, headers: dict[str, str] | None = None, status: int = 200
    ) -> None:
        body = json.dumps(obj).encode()
        self._send(status, body, {"Content-Type": "application/json", **(headers or {})}, head)

    def _error(self, status: int, code: str | None, message: str, head: bool) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._json({"error": message}, head, headers, status)

    def _page(self, items: list[Any], query: dict[str, list[str]], head: bool) -> None:
        start = int(query.get("cursor", ["0"])[0])
        size = self.hub.page_size
        headers = {}
        if start + size < len(items):
            params = [(k, v) for k, vs in query.items() if k != "cursor" for v in vs]
            params.append(("cursor", str(start + size)))
            url = f"{self.hub.endpoint}{urlsplit(self.path).path}?{urlencode(params)}"
            headers["Link"] = f'<{url}>; rel="next"'
        self._json(items[start : start + size], head, headers)

    # -- endpoints ------------------------------------------------------------------------------
    def _search(self, query: dict[str, list[str]], head: bool) -> None:
        text = query.get("search", [""])[0].lower()
        filters = query.get("filter", [])
        author = query.get("author", [None])[0]
        found = []
        for repo_id, repo in list(self.hub.repos.items()):
            if text and text not in repo_id.lower():
                continue
            if author and not repo_id.startswith(author + "/"):
                continue
            if "gguf" in filters and not any(n.endswith(".gguf") for n in repo.files):
                continue
            found.append((repo_id, repo))
        if query.get("sort", [""])[0] == "downloads":
            found.sort(key=lambda item: -item[1].downloads)
        items = [
            {
                "_id": item[1].commit[:24],
                "id": item[0],
                "modelId": item[0],
                "author": item[0].split("/")[0],
                "downloads": item[1].downloads,
                "likes": item[1].downloads // 100,
                "gated": "manual" if item[1].gated else False,
                "private": False,
                "library_name": "gguf",
                "tags": ["gguf", "text-generation"],
                "pipeline_tag": "text-generation",
                "lastModified": "2026-01-01T00:00:00.000Z",
                "createdAt": "2025-06-01T00:00:00.000Z",
            }
            for item in found
        ]
        limit = query.get("limit", [None])[0]
        if limit is not None:
            items = items[: int(limit)]
        self._page(items, query, head)

    def _repo_or_error(self, repo_id: str, rev: str | None, head: bool) -> _Repo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found", head)
            return None
        if rev is not None and rev not in ("main", repo.commit):
            self._error(404, "RevisionNotFound", "Invalid rev id: " + rev, head)
            return None
        return repo

    def _api_repo(self, rest: list[str], query: dict[str, list[str]], head: bool) -> None:
        repo_id = "/".join(rest[:2])
        tail = rest[2:]
        if tail and tail[0] == "tree" and len(tail) >= 2:
            repo = self._repo_or_error(repo_id, tail[1], head)
            if repo is not None:
                prefix = "/".join(tail[2:])
                self._page(self._tree(repo, prefix), query, head)
            return
        rev = tail[1] if len(tail) >= 2 and tail[0] == "revision" else None
        if tail and rev is None:
            self._error(404, None, "no such route", head)
            return
        repo = self._repo_or_error(repo_id, rev, head)
        if repo is None:
            return
        blobs = query.get("blobs", [""])[0].lower() == "true"
        siblings = []
        for name, content in repo.files.items():
            sibling: dict[str, Any] = {"rfilename": name}
            if blobs:
                size = _size(content)
                sibling["size"] = size
                sibling["blobId"] = hashlib.sha1(repo.sha256[name].encode()).hexdigest()
                sibling["lfs"] = {"sha256": repo.sha256[name], "size": size, "pointerSize": 134}
            siblings.append(sibling)
        info = {
            "_id": repo.commit[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0],
            "sha": repo.commit,
            "lastModified": "2026-01-01T00:00:00.000Z",
            "private": False,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "downloads": repo.downloads,
            "likes": repo.downloads // 100,
            "library_name": "gguf",
            "tags": ["gguf", "text-generation"],
            "pipeline_tag": "text-generation",
            "siblings": siblings,
        }
        self._json(info, head)

    def _tree(self, repo: _Repo, prefix: str) -> list[dict[str, Any]]:
        out = []
        for name, content in sorted(repo.files.items()):
            if prefix and not name.startswith(prefix.rstrip("/") + "/"):
                continue
            size = _size(content)
            out.append(
                {
                    "type": "file",
                    "oid": hashlib.sha1(repo.sha256[name].encode()).hexdigest(),
                    "size": size,
                    "path": name,
                    "lfs": {"oid": repo.sha256[name], "size": size, "pointerSize": 134},
                }
            )
        return out

    def _resolve(self, repo_id: str, rev: str, filename: str, head: bool) -> None:
        repo = self._repo_or_error(repo_id, rev, head)
        if repo is None:
            return
        if repo.gated:
            auth = self.headers.get("Authorization", "")
            if auth != f"Bearer {self.hub.token}":
                status = 403 if auth else 401
                msg = f"Access to model {repo_id} is restricted"
                self._error(status, "GatedRepo", msg, head)
                return
        content = repo.files.get(filename)
        if content is None:
            self._error(404, "EntryNotFound", f"{filename} does not exist on main", head)
            return
        size = _size(content)
        links = {
            "X-Repo-Commit": repo.commit,
            "X-Linked-Etag": f'"{repo.sha256[filename]}"',
            "X-Linked-Size": str(size),
        }
        if self.hub.redirect:
            cdn = f"{self.hub.cdn_endpoint}/cdn/{repo.sha256[filename]}?{urlencode({'repo': repo_id, 'file': filename})}"
            self._send(302, b"", {"Location": cdn, **links}, head)
            return
        self._serve(repo_id, filename, repo.sha256[filename], content, links, head)

    def _cdn(self, sha: str, query: dict[str, list[str]], head: bool) -> None:
        repo_id, filename = query.get("repo", [""])[0], query.get("file", [""])[0]
        if self.headers.get("Authorization"):
            self.hub.auth_at_cdn.append(self.headers["Authorization"])
        repo = self.hub.repos.get(repo_id)
        if repo is None or repo.sha256.get(filename) != sha:
            self._error(404, None, "no such object", head)
            return
        self._serve(repo_id, filename, sha, repo.files[filename], {}, head)

    def _serve(
        self,
        repo_id: str,
        filename: str,
        sha: str,
        content: Content,
        links: dict[str, str],
        head: bool,
    ) -> None:
        size = _size(content)
        start, end = 0, size - 1
        status = 200
        rng = self.headers.get("Range") if self.hub.honor_range else None
        if rng:
            m = _RANGE_RE.match(rng.strip())
            if not m or int(m.group(1)) >= size:
                self._send(416, b"", {"Content-Range": f"bytes */{size}"}, head)
                return
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            status = 206
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes" if self.hub.honor_range else "none",
            "ETag": f'"{sha}"',
            **links,
        }
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if not head:
            self._body(f"{repo_id}/{filename}", filename, content, start, end + 1)

    def _body(self, key: str, filename: str, content: Content, start: int, stop: int) -> None:
        drop = self.hub._take_drop(filename)
        flips = self.hub._flips.get(filename, set())
        rate = self.hub._rate
        chunk = min(_CHUNK, max(4096, int(rate / 20))) if rate else 16 * _CHUNK
        began = time.monotonic()
        sent = 0
        handle = content.open("rb") if isinstance(content, Path) else None
        try:
            pos = start
            while pos < stop:
                n = min(chunk, stop - pos)
                if drop is not None:
                    n = min(n, drop - sent)
                    if n <= 0:
                        self._hang_up()
                        return
                if handle is not None:
                    handle.seek(pos)
                    data = handle.read(n)
                else:
                    data = content[pos : pos + n]  # type: ignore[index]
                hit = [o for o in flips if pos <= o < pos + n]
                if hit:
                    buf = bytearray(data)
                    for o in hit:
                        buf[o - pos] ^= 0xFF
                    data = bytes(buf)
                self.wfile.write(data)
                with self.hub._lock:
                    self.hub.bytes_served[key] += len(data)
                pos += n
                sent += n
                if rate:
                    ahead = sent / rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)
        finally:
            if handle is not None:
                handle.close()

    def _hang_up(self) -> None:
        # An abrupt close mid-body, as a dropped Wi-Fi or a proxy reset looks to the client.
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
