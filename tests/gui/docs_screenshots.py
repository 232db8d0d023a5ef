"""The screenshots in docs/: ``python -m tests.gui.docs_screenshots PREFIX FOLDER [SIZE ...]``.

Not a test.  It builds a demo home the way a user would fill it -- the Hub imitation serving the
generated test models, one model imported, two variants downloaded from the "Hub", a third download
paused halfway -- then runs ``quantdesk screenshots`` at each size (900x600 and 1280x800 unless
given) and copies the pages to ``FOLDER/PREFIX-SIZE-PAGE.png``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests import modelfactory
from tests.hub_fixtures import TINY_REPO, tiny_repo_files
from tests.hubsim import HubSim

ROOT = Path(__file__).resolve().parents[2]
_DOWNLOADS = """
import sys, threading
from app.core.download import pull
for quant in ("Q2_K", "Q4_K_M"):
    for _ in pull(sys.argv[1], quant):
        pass
stop = threading.Event()
threading.Timer(2.0, stop.set).start()  # the third one pauses partway, as on closing the app
for _ in pull(sys.argv[1], "Q8_0", stop=stop):
    pass
"""
_IMPORT = """
import sys
from app.core.library import Library
for _ in Library().import_file(sys.argv[1]):
    pass
"""


def main(argv: list[str]) -> int:
    prefix, out = argv[0], Path(argv[1])
    sizes = argv[2:] or ["900x600", "1280x800"]
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="quantdesk-docs-"))
    env = {**os.environ, "QUANTDESK_HOME": str(home), "QT_QPA_PLATFORM": "offscreen"}
    env.update(HF_HOME=str(home / "hf"), HF_HUB_DISABLE_XET="1", NO_PROXY="127.0.0.1")
    env.pop("HF_HUB_OFFLINE", None)
    try:
        with HubSim({TINY_REPO: tiny_repo_files()}, downloads={TINY_REPO: 50_000}) as hub:
            env["HF_ENDPOINT"] = hub.endpoint
            model = str(modelfactory.model_path("Q4_K_M"))

            def run(cmd: list[str]) -> None:
                subprocess.run(cmd, env=env, cwd=ROOT, check=True, timeout=300)

            run([sys.executable, "-c", _IMPORT, model])
            hub.throttle(300_000)
            run([sys.executable, "-c", _DOWNLOADS, TINY_REPO])
            hub.throttle(None)
            for size in sizes:
                shots = home / f"shots-{size}"
                cmd = [sys.executable, "-m", "app", "screenshots", str(shots), "--size", size]
                cmd += ["--repo", TINY_REPO, "--timeout", "120"]
                run(cmd)
                for f in sorted(shots.glob("*.png")):
                    target = out / f"{prefix}-{size}-{f.stem.split('-', 1)[1]}.png"
                    shutil.copy(f, target)
                    print(target)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
