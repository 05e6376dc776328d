"""GRPO step time and peak GPU memory for a model of a given shape.

    python bench/grpo_step_gpu.py --model Qwen/Qwen2.5-Coder-0.5B-Instruct      # real weights
    python bench/grpo_step_gpu.py --shape qwen2.5-0.5b                          # same shape, random weights

``--shape`` builds a random-weight model with the exact architecture of Qwen2.5-Coder-0.5B-Instruct
(for machines that cannot download it). Random weights never emit the stop token, so every
completion runs to ``--max-new-tokens``: the step time is an upper bound for that length. Prints one
row per step (generation / sandbox / training seconds, generated tokens/s, peak memory) and a
summary of the warm steps (the first step pays CUDA warm-up and is excluded).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import lightning as L
import torch

from laimark_pl.datamodules.curriculum import CurriculumDataModule
from laimark_pl.modules.grpo import GRPOConfig, GRPOModule, OptimConfig, SamplingConfig
from laimark_pl.modules.policy import PolicyConfig

SHAPES = {
    # Qwen2.5-Coder-0.5B-Instruct's config.json
    "qwen2.5-0.5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                         rope_theta=1000000.0, tie_word_embeddings=True),
}


def build_shaped_model(shape: str, dest: Path) -> Path:
    """A random-weight Qwen2 model of a known shape, with the tiny tokenizer (decoding only)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from laimark_pl.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = Qwen2Config(**SHAPES[shape], eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         torch_dtype="bfloat16")
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


class StepRecorder(L.Callback):
    """Collects the module's per-step timings and per-phase CUDA peak memory (the module logs both)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        torch.cuda.synchronize()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        torch.cuda.synchronize()
        m = trainer.callback_metrics
        generation_peak = float(m.get("memory/generation_peak_gib", float("nan")))
        training_peak = float(m.get("memory/training_peak_gib", float("nan")))
        self.rows.append({
            "step": batch_idx,
            "step_s": time.perf_counter() - self._start,
            "generation_s": float(m.get("time/generation_s", float("nan"))),
            "sandbox_s": float(m.get("time/sandbox_s", float("nan"))),
            "training_s": float(m.get("time/training_s", float("nan"))),
            "tokens_per_s": float(m.get("train/generated_tokens_per_s", float("nan"))),
            "completion_len": float(m.get("train/completion_length_mean", float("nan"))),
            "generation_peak_gib": generation_peak,
            "training_peak_gib": training_peak,
            "peak_gib": max(generation_peak, training_peak),
        })
        print(json.dumps(self.rows[-1]), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="hub id or local path of the model")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="build a random model of this shape instead")
    parser.add_argument("--batch-size", type=int, default=8, help="problems per step")
    parser.add_argument("--generations", type=int, default=8, help="completions per problem (G)")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--micro-batch-size", type=int, help="completions per forward/backward (default: all)")
    parser.add_argument("--load-in-4bit", action="store_true")
    parser.add_argument("--out", default="grpo_step_gpu.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    model = args.model or str(build_shaped_model(args.shape, Path("/tmp") / f"shape-{args.shape}"))
    module = GRPOModule(
        policy=PolicyConfig(model=model, dtype="bfloat16", load_in_4bit=args.load_in_4bit,
                            gradient_checkpointing=args.gradient_checkpointing, generation_batch_size=256),
        sampling=SamplingConfig(num_generations=args.generations, max_new_tokens=args.max_new_tokens),
        grpo=GRPOConfig(micro_batch_size=args.micro_batch_size), optim=OptimConfig(lr=1e-5))
    data = CurriculumDataModule(batch_size=args.batch_size, eval_set="none", problem_types=["induction"])
    recorder = StepRecorder()
    trainer = L.Trainer(accelerator="gpu", devices=1, precision="bf16-true", max_steps=args.steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, callbacks=[recorder],
                        log_every_n_steps=1, limit_val_batches=0)
    trainer.fit(module, data)
    warm = recorder.rows[1:] or recorder.rows
    summary = {
        "device": torch.cuda.get_device_name(), "model": args.model or f"{args.shape} (random weights)",
        "batch_size": args.batch_size, "generations": args.generations, "max_new_tokens": args.max_new_tokens,
        "gradient_checkpointing": args.gradient_checkpointing, "micro_batch_size": args.micro_batch_size,
        "load_in_4bit": args.load_in_4bit,
        "warm_steps": len(warm),
        "median_step_s": statistics.median(r["step_s"] for r in warm),
        "median_generation_s": statistics.median(r["generation_s"] for r in warm),
        "median_training_s": statistics.median(r["training_s"] for r in warm),
        "median_sandbox_s": statistics.median(r["sandbox_s"] for r in warm),
        "median_tokens_per_s": statistics.median(r["tokens_per_s"] for r in warm),
        "generation_peak_gib": max(r["generation_peak_gib"] for r in recorder.rows),
        "training_peak_gib": max(r["training_peak_gib"] for r in recorder.rows),
        "peak_gib": max(r["peak_gib"] for r in recorder.rows),
    }
    Path(args.out).write_text(json.dumps({"summary": summary, "steps": recorder.rows}, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
