"""Compare's memory: each variant's peak RSS in a real comparison against its scoring-pass plan.

``quantdesk compare`` and the Compare page run the same pipeline (``app.core.compare.run_compare``):
it decides parallel or sequential from each variant's scoring-pass plan
(``Planner.need_bytes(..., workload="score")``) and every variant's engine child reports its peak
RSS (VmHWM, the load included).  This runs that pipeline on the MEDIUM generated model's Q8_0,
Q4_K_M and Q2_K (a reply, then the shipped reference text scored through every variant), in both
modes, and prints plan vs peak per variant: the plan should never be below the peak.

    .venv/bin/python -m bench.compare_memory [--ctx 2048] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from app.core.compare import CompareOptions, Finished, PlanReady, run_compare
from app.core.planning import Planner
from app.core.taskeval import PromptItem
from tests import modelfactory

MIB = 1 << 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()
    paths = [modelfactory.model_path(q, modelfactory.MEDIUM) for q in ("Q8_0", "Q4_K_M", "Q2_K")]
    items = [PromptItem(messages=[{"role": "user", "content": "Explain how a plan is made."}])]
    print("| mode | variant | scoring-pass plan MiB | measured peak RSS MiB | plan vs peak |")
    print("|---|---|---|---|---|")
    with Planner() as planner:
        for mode in ("sequential", "parallel"):
            opts = CompareOptions(max_tokens=args.max_tokens, n_ctx=args.ctx, mode=mode)
            need: dict[str, int] = {}
            for event in run_compare(paths, items, options=opts, planner=planner):
                if isinstance(event, PlanReady):
                    for v, n in zip(event.variants, event.plan.need_bytes, strict=True):
                        need[str(v.path)] = n
                elif isinstance(event, Finished):
                    for result in event.report.results:
                        path, plan = Path(result.model), need[result.model]
                        peak = result.peak_rss_bytes or 0
                        err = f"{100 * (plan - peak) / peak:+.1f}%" if peak else "n/a"
                        print(
                            f"| {mode} | {path.name} | {plan / MIB:.0f} | {peak / MIB:.0f} "
                            f"| {err} |",
                            flush=True,
                        )


if __name__ == "__main__":
    main()
