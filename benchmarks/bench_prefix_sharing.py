"""GPU-stage speed of Q-Debias and Compare2Score prompts: unshared ("naive") vs shared prefixes.

One run loads one model and times both paths on the same images, alternating naive and
optimised repeats (so a noisy neighbour hits both), and prints a markdown table per method:
images/s and model passes/s (logical two-image passes: 8 per image for Q-Debias, 5 for
Compare2Score), language-model tokens and vision-encoder images actually computed per image,
model GFLOP per image (2 x params x tokens, per the config's parameter counts; attention
FLOPs not included), and on a GPU the achieved fraction of the device's bf16 dense peak.

    # CPU, the tiny smoke LLaVA (overheads dominate: a plumbing-level ratio)
    .venv/bin/python benchmarks/bench_prefix_sharing.py --arch tiny
    # CPU, a small random LLaVA where matrix work dominates
    .venv/bin/python benchmarks/bench_prefix_sharing.py --arch cpu-small --images 4
    # any machine: tokens and model FLOPs per image of a full-size arch, no timing
    .venv/bin/python benchmarks/bench_prefix_sharing.py --arch llava-1.5-7b --count-only
    # GPU, random weights shaped like LLaVA-1.5-7B (bf16, SDPA)
    python benchmarks/bench_prefix_sharing.py --arch llava-1.5-7b --images 64 \
        --batch-images 16 --model-batch-size 32 --max-tokens 65536

Random weights: scores mean nothing; speed does not depend on them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.random_vlm import ARCHES, ParamCounts, build_model, build_processor, param_counts
from iqa_ray.backends import Prompt
from iqa_ray.backends.config import ModelConfig
from iqa_ray.backends.transformers.backend import TransformersBackend
from iqa_ray.methods import ImageBatch, get_method
from iqa_ray.methods.compare2score.method import ANSWER_PREFIX, QUESTION, WORDS, comparison_prompt

# bf16 dense tensor-core peaks (TFLOP/s) by device-name fragment; --peak-tflops overrides.
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 125.0,
}


def load_backend(args: argparse.Namespace, work: Path) -> tuple[TransformersBackend, ParamCounts]:
    """The tiny smoke model through from_pretrained, or a random full-size arch in memory."""
    import torch

    opts = dict(batch_size=args.model_batch_size, max_tokens_per_batch=args.max_tokens)
    if args.arch == "tiny":
        from iqa_ray.devtools.smoke import build_tiny_llava

        folder = args.model_dir or build_tiny_llava(work / "tiny")
        backend = TransformersBackend(ModelConfig(id=str(folder), dtype="float32", **opts))
        return backend, param_counts(backend.model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    device = "meta" if args.count_only else device  # shapes only: no memory, no compute
    dtype = torch.bfloat16 if device in ("cuda", "meta") else torch.float32
    processor = build_processor(args.arch, work / "tokenizer")
    model = build_model(args.arch, processor, device, dtype, attn=args.attn)
    cfg = ModelConfig(id=f"random:{args.arch}", attn_implementation=args.attn, **opts)
    return TransformersBackend.from_loaded(model, processor, cfg), param_counts(model)


def workloads(n_images: int, side: int, seed: int = 0) -> dict[str, list[list[Prompt]]]:
    """Per method, the prompts of each image (Q-Debias from the method itself)."""
    rng = np.random.default_rng(seed)

    def image() -> np.ndarray:
        return rng.integers(0, 256, (side, side * 4 // 3, 3), dtype=np.uint8)

    q_debias = get_method("q_debias")({})
    keys = [v.key for v in q_debias.variants()]
    queries = [image() for _ in range(n_images)]
    batch = ImageBatch(
        np.arange(n_images, dtype=np.int64),
        queries,
        {k: [image() for _ in range(n_images)] for k in keys},
    )
    anchors = [image() for _ in range(5)]
    spec = SimpleNamespace(question=QUESTION, answer_prefix=ANSWER_PREFIX, words=WORDS)
    return {
        "q_debias": [q_debias.prompts(batch, i) for i in range(n_images)],
        "compare2score": [
            [comparison_prompt(a, q, (f"anchor{k}", str(i)), spec) for k, a in enumerate(anchors)]
            for i, q in enumerate(queries)
        ],
    }


def time_pass(
    backend: TransformersBackend, per_image: list[list[Prompt]], batch_images: int
) -> tuple[float, dict]:
    """Seconds to score every image (calls of ``batch_images`` images, as the score stage
    does), and the backend's work counters."""
    import torch

    backend.stats.reset()
    start = time.perf_counter()
    for i in range(0, len(per_image), batch_images):
        out = backend.next_token_logits([p for ps in per_image[i : i + batch_images] for p in ps])
        if not all(isinstance(o, np.ndarray) for o in out):
            raise RuntimeError(
                f"a prompt failed: {next(o for o in out if not isinstance(o, np.ndarray))}"
            )
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, backend.stats.as_dict()


def measure(
    backend: TransformersBackend, per_image: list[list[Prompt]], args: argparse.Namespace
) -> dict[str, Any]:
    """Best-of-``repeats`` time per mode, naive and optimised alternating, same images."""
    best: dict[str, tuple[float, dict]] = {}
    for sharing in (False, True):  # warm-up of each path on one image
        backend.prefix_sharing = sharing
        time_pass(backend, per_image[:1], 1)
    for _ in range(args.repeats):
        for mode, sharing in (("naive", False), ("optimised", True)):
            backend.prefix_sharing = sharing
            seconds, stats = time_pass(backend, per_image, args.batch_images)
            if mode not in best or seconds < best[mode][0]:
                best[mode] = (seconds, stats)
    backend.prefix_sharing = True
    return best


def device_peak(args: argparse.Namespace) -> tuple[str, float | None]:
    """Device name and bf16 dense peak in FLOP/s (None on CPU or an unknown GPU)."""
    import torch

    if not torch.cuda.is_available():
        return "CPU", None
    name = torch.cuda.get_device_name(0)
    if args.peak_tflops:
        return name, args.peak_tflops * 1e12
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    return name, peak * 1e12 if peak else None


def table(results: dict[str, dict], counts: ParamCounts, n: int, peak: float | None) -> list[str]:
    """Markdown rows: one per (method, mode), then the optimised/naive ratio per method."""
    lines = [
        "| method | path | s | images/s | passes/s | LM tokens/image | images encoded/image "
        "| GFLOP/image | fraction of peak |",
        "| --- " * 9 + "|",
    ]
    for method, best in results.items():
        for mode, (seconds, stats) in best.items():
            flops = 2 * (
                counts.language * stats["tokens"]
                + counts.vision * counts.vision_tokens_per_image * stats["images_encoded"]
            )
            share = f"{flops / seconds / peak:.1%}" if peak else "n/a (CPU)"
            lines.append(
                f"| {method} | {mode} | {seconds:.2f} | {n / seconds:.2f} | "
                f"{stats['prompts'] / seconds:.1f} | {stats['tokens'] / n:.0f} | "
                f"{stats['images_encoded'] / n:.1f} | {flops / n / 1e9:.3g} | {share} |"
            )
    lines.append("")
    for method, best in results.items():
        ratio = best["naive"][0] / best["optimised"][0]
        tokens = best["naive"][1]["tokens"] / max(best["optimised"][1]["tokens"], 1)
        lines.append(
            f"{method}: optimised/naive speed = {ratio:.2f}x (LM tokens {tokens:.2f}x fewer)"
        )
    return lines


def count_table(
    backend: TransformersBackend,
    work: dict[str, list[list[Prompt]]],
    counts: ParamCounts,
    batch_images: int,
) -> list[str]:
    """Per method, tokens, encoded images and model FLOPs per image of both paths, from the
    grouping the shared path would use (no language-model pass: runs on the meta device)."""
    lines = [
        "| method | passes/image | LM tokens/image (naive / shared) | images encoded/image "
        "(naive / shared) | GFLOP/image (naive / shared) | FLOP ratio |",
        "| --- " * 6 + "|",
    ]
    for method, per_image in work.items():
        tokens, images, n = [0, 0], [0, 0], len(per_image)
        for i in range(0, n, batch_images):
            prompts = [p for ps in per_image[i : i + batch_images] for p in ps]
            plan = backend._shared.plan(prompts)
            tokens = [tokens[0] + plan.unshared_tokens, tokens[1] + plan.shared_tokens]
            images = [
                images[0] + sum(len(p.images) for p in prompts),
                images[1] + plan.distinct_images,
            ]
        flops = [
            2 * (counts.language * t + counts.vision * counts.vision_tokens_per_image * m)
            for t, m in zip(tokens, images, strict=True)
        ]
        lines.append(
            f"| {method} | {len(per_image[0])} | {tokens[0] / n:.0f} / {tokens[1] / n:.0f}"
            f" | {images[0] / n:.1f} / {images[1] / n:.1f} | {flops[0] / n / 1e9:.0f} / "
            f"{flops[1] / n / 1e9:.0f} | {flops[0] / flops[1]:.2f}x |"
        )
    return lines


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=["tiny", *ARCHES], default="tiny")
    parser.add_argument(
        "--model-dir", type=Path, help="an existing tiny model folder (--arch tiny)"
    )
    parser.add_argument("--images", type=int, default=16, help="images per method")
    parser.add_argument("--side", type=int, default=240, help="image height in pixels")
    parser.add_argument("--batch-images", type=int, default=8, help="images per backend call")
    parser.add_argument("--model-batch-size", type=int, default=16, help="rows per forward")
    parser.add_argument("--max-tokens", type=int, default=None, help="padded tokens per forward")
    parser.add_argument("--attn", default=None, help="attn_implementation, e.g. sdpa")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--methods", nargs="+", default=["q_debias", "compare2score"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--count-only",
        action="store_true",
        help="no timing: tokens and FLOPs per image from the config (any arch, "
        "any machine: the model is built on the meta device)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="iqa_bench_") as tmp:
        backend, counts = load_backend(args, Path(tmp))
        work = {m: w for m, w in workloads(args.images, args.side).items() if m in args.methods}
        if args.count_only:
            lines = [
                f"\narch {args.arch}: model FLOPs from the config (2 x params x tokens), "
                f"{args.batch_images} images per call\n",
                *count_table(backend, work, counts, args.batch_images),
            ]
            print("\n".join(lines))
            return lines
        results = {m: measure(backend, w, args) for m, w in work.items()}
    name, peak = device_peak(args)
    lines = [
        f"\narch {args.arch} on {name}: {args.images} images per method, "
        f"{args.batch_images} per call, model_batch_size {args.model_batch_size}, "
        f"max_tokens {args.max_tokens}, best of {args.repeats}; LM params/token "
        f"{counts.language / 1e6:.1f}M, vision {counts.vision / 1e6:.1f}M x "
        f"{counts.vision_tokens_per_image} tokens/image\n",
        *table(results, counts, args.images, peak),
    ]
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
