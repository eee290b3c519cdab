"""GPU-stage work per image, before and after each change of issue 17, side by side in one run.

The score actor gets a batch of decoded images and runs the model. Its CPU work outside the
model (resizing and normalising every distinct image, rendering and tokenizing every prompt,
grouping prefixes) is what keeps a GPU waiting. Changes, each with a flag:

* ``memo``: each distinct prompt text is rendered and tokenized once (not once per prompt);
* ``presize``: the decode stage applies the model's own resize and crop (``PixelPlan``), so the
  score actor only normalises (on the device); the decode stage's added CPU time is reported.

Rows: every combination asked for (default: before, +memo, +presize, after). Columns:
images/s, score-actor CPU seconds per image outside model calls (process time, all threads),
the decode stage's geometry CPU per image, padding fraction, and on a GPU the fraction of the
bf16 peak from model FLOPs and the GPU busy fraction (sampled with ``torch.cuda.utilization``).

    .venv/bin/python benchmarks/bench_gpu_stage.py --arch cpu-small --threads 1   # CPU
    python benchmarks/bench_gpu_stage.py --arch llava-interleave-qwen-0.5b --images 64 \\
        --batch-images 16 --model-batch-size 64                                    # GPU

Random weights: scores mean nothing; speed does not depend on them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.bench_prefix_sharing import device_peak, load_backend
from benchmarks.random_vlm import ParamCounts
from iqa_ray.backends import Prompt
from iqa_ray.backends.transformers.backend import TransformersBackend
from iqa_ray.methods import ImageBatch, get_method
from iqa_ray.methods.compare2score.method import ANSWER_PREFIX, QUESTION, WORDS, comparison_prompt

VARIANTS = {"before": (False, False), "+memo": (True, False), "+presize": (False, True),
            "after": (True, True)}


def workload(method: str, n: int, side: int, geometry: Any) -> tuple[list[list[Prompt]], float]:
    """Prompts of ``n`` images (decode-stage images, optionally brought to the model geometry)
    and the geometry's CPU seconds (what the decode stage spends on it)."""
    rng = np.random.default_rng(0)

    def image() -> np.ndarray:
        return rng.integers(0, 256, (side, side * 4 // 3, 3), dtype=np.uint8)

    spent = [0.0]

    def shape(im: np.ndarray) -> np.ndarray:
        if geometry is None:
            return im
        start = time.process_time()
        out = geometry(im)
        spent[0] += time.process_time() - start
        return out

    if method == "q_debias":
        q = get_method("q_debias")({})
        batch = ImageBatch(np.arange(n, dtype=np.int64), [shape(image()) for _ in range(n)],
                           {v.key: [shape(image()) for _ in range(n)] for v in q.variants()})
        return [q.prompts(batch, i) for i in range(n)], spent[0]
    queries = [shape(image()) for _ in range(n)]
    # The method resizes its anchors once per actor (backend.prepare_image), not per image.
    anchors = [geometry(image()) if geometry else image() for _ in range(5)]
    spec = argparse.Namespace(question=QUESTION, answer_prefix=ANSWER_PREFIX, words=WORDS)
    return [[comparison_prompt(a, q, (f"anchor{k}", str(i)), spec)
             for k, a in enumerate(anchors)] for i, q in enumerate(queries)], spent[0]


class GpuBusy:
    """Mean of ``torch.cuda.utilization()`` sampled every 50 ms while active (None on CPU)."""

    def __init__(self) -> None:
        import torch

        self._on = torch.cuda.is_available()
        self._samples: list[float] = []
        self._stop = threading.Event()

    def __enter__(self) -> GpuBusy:
        if self._on:
            threading.Thread(target=self._sample, daemon=True).start()
        return self

    def _sample(self) -> None:
        import torch

        while not self._stop.wait(0.05):
            try:
                self._samples.append(float(torch.cuda.utilization()))
            except Exception:  # no NVML: report n/a
                self._on = False
                return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    @property
    def fraction(self) -> float | None:
        return sum(self._samples) / len(self._samples) / 100 if self._on and self._samples else None


def run_once(backend: TransformersBackend, per_image: list[list[Prompt]], batch: int
             ) -> tuple[float, dict[str, Any], float | None]:
    """Wall seconds, work counters and GPU busy fraction of one pass over the images."""
    import torch

    backend.stats.reset()
    with GpuBusy() as busy:
        start = time.perf_counter()
        for i in range(0, len(per_image), batch):
            out = backend.next_token_logits([p for ps in per_image[i : i + batch] for p in ps])
            if not all(isinstance(o, np.ndarray) for o in out):
                raise RuntimeError("a prompt failed")
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    stats = backend.stats.as_dict() | {"padding": backend.stats.padding_fraction}
    return seconds, stats, busy.fraction


def measure(backend: TransformersBackend, method: str, args: argparse.Namespace,
            counts: ParamCounts, peak: float | None) -> list[list[str]]:
    """One table row per variant: best of ``repeats`` passes, variants interleaved."""
    plan = backend.rt.pixel_plan
    loads = {name: workload(method, args.images, args.side,
                            plan.geometry if presize and plan is not None else None)
             for name, (_, presize) in VARIANTS.items() if name in args.variants}
    best: dict[str, tuple[float, dict[str, Any], float | None]] = {}
    for _ in range(args.repeats):
        for name, (prompts, _) in loads.items():
            backend.rt.memo = VARIANTS[name][0]
            backend.rt._texts.clear()
            backend._shared.encoder._ids.clear()
            run_once(backend, prompts[:1], 1)  # warm the memo for this shape, as an actor does
            result = run_once(backend, prompts, args.batch_images)
            if name not in best or result[0] < best[name][0]:
                best[name] = result
    backend.rt.memo = True
    rows, n = [], args.images
    for name, (seconds, stats, busy) in best.items():
        flops = 2 * (counts.language * stats["tokens"]
                     + counts.vision * counts.vision_tokens_per_image * stats["images_encoded"])
        outside = (stats["cpu_s"] - stats["device_cpu_s"]) / n
        rows.append([method, name, f"{n / seconds:.2f}", f"{outside * 1e3:.1f}",
                     f"{loads[name][1] / n * 1e3:.1f}", f"{stats['padding']:.1%}",
                     f"{flops / seconds / peak:.1%}" if peak else "n/a (CPU)",
                     f"{busy:.0%}" if busy is not None else "n/a"])
    return rows


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="cpu-small")
    parser.add_argument("--model-dir", type=Path, help="an existing tiny model (--arch tiny)")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--side", type=int, default=240, help="decoded image height")
    parser.add_argument("--batch-images", type=int, default=8, help="images per backend call")
    parser.add_argument("--model-batch-size", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--attn", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--methods", nargs="+", default=["q_debias", "compare2score"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args(argv)
    args.count_only = False
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="iqa_bench_") as tmp:
        backend, counts = load_backend(args, Path(tmp))
        name, peak = device_peak(args)
        rows = [r for m in args.methods for r in measure(backend, m, args, counts, peak)]
    head = ["method", "variant", "images/s", "score-actor CPU ms/image (outside model)",
            "decode geometry CPU ms/image", "padding", "fraction of bf16 peak", "GPU busy"]
    lines = [f"\narch {args.arch} on {name}: {args.images} images, {args.batch_images} per call, "
             f"model batch {args.model_batch_size}, best of {args.repeats}\n",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    for method in args.methods:
        mine = {r[1]: float(r[3]) for r in rows if r[0] == method}
        if "before" in mine and "after" in mine:
            lines.append(f"{method}: score-actor CPU outside the model, before/after = "
                         f"{mine['before'] / max(mine['after'], 1e-9):.1f}x")
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
