"""One self-generated curriculum round (propose -> verify -> dedup/decontaminate -> derive ->
calibrate) with a real model: the funnel and the wall time of every stage.

    python bench/curriculum_round.py --model /root/demo-hf --candidates 32 --samples 8 --out runs/round

Writes ``summary.json`` (funnel, rejections per rule, seconds per stage, device), the proposer's
raw replies, the calibrated problems and the accepted ones under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from laimark_pl.curriculum.calibrate import CalibrationConfig, pass_rate_histogram
from laimark_pl.curriculum.pipeline import RoundConfig, run_round
from laimark_pl.curriculum.propose import ProposeConfig
from laimark_pl.problems import builtin_curriculum_path, read_problems, write_problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="hub id, local directory, .gguf file or 'tiny'")
    parser.add_argument("--candidates", type=int, default=32)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=1024)
    parser.add_argument("--harder-share", type=float, default=0.5)
    parser.add_argument("--pool", default="builtin", help="'builtin', a JSONL path, or 'none'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--generation-batch-size", type=int, default=256)
    parser.add_argument("--recalibrate-pool", action="store_true",
                        help="also re-calibrate the pool in the same batch (what CurriculumRefresh does)")
    parser.add_argument("--out", default="runs/curriculum_round")
    args = parser.parse_args()

    import torch

    from laimark_pl.modules.policy import PolicyConfig, load_policy
    from laimark_pl.sandbox import create

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pool = [] if args.pool == "none" else read_problems(builtin_curriculum_path() if args.pool == "builtin"
                                                         else args.pool)
    start = time.perf_counter()
    policy = load_policy(PolicyConfig(model=args.model, trainable=False,
                                      generation_batch_size=args.generation_batch_size))
    load_s = time.perf_counter() - start
    config = RoundConfig(
        num_candidates=args.candidates,
        propose=ProposeConfig(harder_share=args.harder_share, max_new_tokens=args.max_new_tokens),
        calibration=CalibrationConfig(samples=args.samples, max_new_tokens=args.max_new_tokens))
    with create("process", workers=args.workers, timeout_s=5.0) as sandbox:
        start = time.perf_counter()
        result, old = run_round(policy, sandbox, pool, config, seed=args.seed,
                                recalibrate=pool if args.recalibrate_pool else ())
        round_s = time.perf_counter() - start
    rates = result.calibration.pass_rates
    summary = {
        "model": args.model,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
        "candidates": args.candidates, "samples": args.samples, "max_new_tokens": args.max_new_tokens,
        "pool": len(pool), "seed": args.seed,
        "funnel": dict(result.funnel.steps), "rejected": dict(result.funnel.reasons),
        "seconds": {"load_model": round(load_s, 2), **{k: round(v, 2) for k, v in result.seconds.items()},
                    "round_total": round(round_s, 2)},
        "pass_rate_histogram_5_bins": pass_rate_histogram(rates, 5),
        "accepted": [{"type": p.problem_type, "entry_point": p.entry_point, "pass_rate": p.pass_rate}
                     for p in result.accepted],
        "pool_recalibrated": {"pass_rate_histogram_5_bins": pass_rate_histogram(old.pass_rates, 5),
                              "in_window": len(old.result.kept), "outcomes": dict(old.result.counts)},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "raw_proposals.json").write_text(json.dumps(result.raw, indent=1))
    write_problems(out / "calibrated.jsonl", list(result.calibration.problems) + list(old.problems))
    write_problems(out / "accepted.jsonl", result.accepted)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
