"""Throughput of the ATTIQA scorer against the LMM baseline and CLIP labelling, side by side.

Run: PYTHONPATH=. python benchmarks/bench_attiqa.py [--images 48] [--batch 8] [--repeat 3]
Every method runs in-process through the same code path as the score stage (``setup`` once,
then ``score_batch`` on batches of decoded images) on the same synthetic 384x288 images. After
one warm-up batch each, the methods take turns: every round times one pass of each method over
all images, so a load spike on a shared machine hits all of them alike; images/s is the best
round. Models are random-weight builds of the stated shapes, loaded back through the
production loaders (speed does not depend on the weights; SCORES MEAN NOTHING). Rows:
  attiqa           tiny ResNet (the tests') and ResNet-50 shape at 224 px
  clip_attributes  tiny CLIP and CLIP ViT-B/32 shape (5 pairs; text embedded once per actor)
  qalign_levels    the baseline: tiny LLaVA (iqa_ray.devtools.smoke), random_vlm "cpu-small"
  the project's default LMM (llava-interleave-qwen-0.5b shape): parameters and FLOPs counted on
  the meta device; timed only with --default-lmm-images N (a raw forward per image).
Set OMP_NUM_THREADS to pin the CPU threads; nothing is written outside a temp dir.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from iqa_ray.attiqa.selection import generated_sources
from iqa_ray.devtools.tiny_attiqa import TINY_RESNET, build_clip, build_tiny_clip
from iqa_ray.methods import ImageBatch, MethodContext, get_method

RESNET50 = {"model_type": "resnet", "config": {}}  # ResNetConfig() defaults = ResNet-50
B32_TEXT = {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
            "num_attention_heads": 8}
B32_VISION = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
              "num_attention_heads": 12, "patch_size": 32}


def _attiqa_model(folder: Path, backbone: dict[str, Any], image_size: int) -> Path:
    import torch

    from iqa_ray.methods.attiqa.backbone import BackboneSpec
    from iqa_ray.methods.attiqa.network import AttiqaNetwork, build_backbone, save_network

    torch.manual_seed(0)
    net = AttiqaNetwork(build_backbone(BackboneSpec.model_validate(backbone)), head_hidden=0)
    save_network(net, folder, {"head_hidden": 0, "mean": net.mean.flatten().tolist(),
                               "std": net.std.flatten().tolist(), "image_size": image_size})
    return folder


def _llava_folder(folder: Path, arch: str | None) -> Path:
    import torch

    from benchmarks.random_vlm import build_model, build_processor
    from iqa_ray.devtools.smoke import build_tiny_llava

    if arch is None:
        return build_tiny_llava(folder)
    processor = build_processor(arch, folder)
    build_model(arch, processor, "cpu", torch.float32).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _counted(run: Callable[[], Any]) -> float:
    """FLOPs of one call (torch's counter: matmuls and convolutions, 2 per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        run()
    return float(counter.get_total_flops())


def attiqa_cost(folder: Path) -> tuple[int, float]:
    """(parameters, FLOPs per image) of a saved ATTIQA network."""
    import torch

    from iqa_ray.methods.attiqa.network import load_network

    net, meta = load_network(folder)
    size = int(meta["image_size"])
    flops = _counted(lambda: net(torch.zeros(1, size, size, 3, dtype=torch.uint8)))
    return sum(p.numel() for p in net.parameters()), flops


def clip_cost(folder: Path) -> tuple[int, float]:
    """(image-side parameters, FLOPs per image): text embeddings are cached per actor."""
    import torch
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(folder).eval()
    size = model.config.vision_config.image_size
    flops = _counted(lambda: model.get_image_features(pixel_values=torch.zeros(1, 3, size, size)))
    params = sum(p.numel() for p in model.vision_model.parameters())
    return params + sum(p.numel() for p in model.visual_projection.parameters()), flops


def llava_cost(model: Any, processor: Any) -> tuple[int, float]:
    """(parameters, FLOPs) of one qalign_levels pass: vision tower + projector + language model
    over the whole prompt + the head at the last position. Counted piecewise because the full
    forward calls ``.item()``, which the meta device (used for the big model) cannot run."""
    import torch

    from iqa_ray.methods.levels import ANSWER_PREFIX, QUESTION

    content = [{"type": "image"}, {"type": "text", "text": QUESTION}]
    messages = [{"role": "user", "content": content}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = processor(text=[f"{text} {ANSWER_PREFIX}"], images=[[np.zeros((288, 384, 3), np.uint8)]],
                    return_tensors="pt")
    device = next(model.parameters()).device
    inner, length = model.model, enc["input_ids"].shape[1]

    def forward() -> None:
        hidden = inner.vision_tower(enc["pixel_values"].to(device), output_hidden_states=True)
        inner.multi_modal_projector(hidden.hidden_states[-1])
        width = model.config.text_config.hidden_size
        out = inner.language_model(inputs_embeds=torch.zeros(1, length, width, device=device))
        model.lm_head(out.last_hidden_state[:, -1:])

    return sum(p.numel() for p in model.parameters()), _counted(forward)


def llava_folder_cost(folder: Path) -> tuple[int, float]:
    """``llava_cost`` of a saved model."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    return llava_cost(model, AutoProcessor.from_pretrained(folder))


DEFAULT_LMM = "llava-interleave-qwen-0.5b"
BASELINE = 4  # row of qalign_levels on the tiny LLaVA in ``main``'s plan


def default_lmm_cost() -> tuple[int, float]:
    """``llava_cost`` of the project's default LMM shape, on the meta device (no memory)."""
    import torch

    from benchmarks.random_vlm import build_model, build_processor

    with tempfile.TemporaryDirectory() as tmp:
        processor = build_processor(DEFAULT_LMM, Path(tmp))
        return llava_cost(build_model(DEFAULT_LMM, processor, "meta", torch.float32), processor)


def default_lmm_rate(images: list[np.ndarray]) -> float:
    """images/s of the default LMM shape (random weights, float32, ~3.5 GB) doing what one
    qalign_levels pass does: the prompt with one image, logits at the last position only.
    Timed as a raw forward, one image per pass, best of two passes over ``images``."""
    import torch

    from benchmarks.random_vlm import build_model, build_processor
    from iqa_ray.methods.levels import ANSWER_PREFIX, QUESTION

    with tempfile.TemporaryDirectory() as tmp:
        processor = build_processor(DEFAULT_LMM, Path(tmp))
    model = build_model(DEFAULT_LMM, processor, "cpu", torch.float32)
    content = [{"type": "image"}, {"type": "text", "text": QUESTION}]
    text = processor.apply_chat_template([{"role": "user", "content": content}],
                                         add_generation_prompt=True, tokenize=False)
    best = 0.0
    for _ in range(2):
        start = time.perf_counter()
        for image in images:
            enc = processor(text=[f"{text} {ANSWER_PREFIX}"], images=[[image]],
                            return_tensors="pt")
            with torch.inference_mode():
                model(**enc, logits_to_keep=1, use_cache=False)
        best = max(best, len(images) / (time.perf_counter() - start))
    return best


def one_pass(method: Any, ctx: MethodContext, images: list[np.ndarray], batch: int) -> float:
    """Seconds for ``score_batch`` over ``images`` in batches of ``batch`` (row errors fail)."""
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        chunk = images[i:i + batch]
        result = method.score_batch(ImageBatch(np.arange(len(chunk)), chunk), ctx)
        if any(e is not None for e in result.errors):
            raise RuntimeError(f"{method.name}: row errors {result.errors}")
    return time.perf_counter() - start


def interleaved_rates(runners: list[tuple[Any, MethodContext]], images: list[np.ndarray],
                      batch: int, rounds: int) -> list[float]:
    """Best images/s of each (method, context) over ``rounds`` rounds that time every method
    once, in turn, after one warm-up batch each."""
    for method, ctx in runners:
        one_pass(method, ctx, images[:batch], batch)
    best = [0.0] * len(runners)
    for _ in range(rounds):
        for k, (method, ctx) in enumerate(runners):
            best[k] = max(best[k], len(images) / one_pass(method, ctx, images, batch))
    return best


def _context(model_dir: Path | None, batch: int) -> MethodContext:
    def vlm() -> Any:
        from iqa_ray.backends import load_backend
        from iqa_ray.backends.config import ModelConfig

        return load_backend(ModelConfig(id=str(model_dir), batch_size=batch))

    return MethodContext(vlm_factory=vlm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--default-lmm-images", type=int, default=0,
                        help="also time the default LMM shape on N images (~3.5 GB RAM)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_attiqa_") as tmp:
        rows = measure(args, Path(tmp))
    print_table(args, rows)


def measure(args: argparse.Namespace, tmp: Path) -> list[tuple[str, str, int, float, float]]:
    """Build every model under ``tmp``, time the methods side by side, count their cost."""
    images = generated_sources(args.images, seed=1, size=(384, 288))
    clip_b32 = {"text": B32_TEXT, "vision": B32_VISION, "projection_dim": 512, "image_size": 224}
    plans: list[tuple[str, str, Callable[[], Path], Callable[[Path], tuple[int, float]]]] = [
        ("attiqa", "tiny ResNet (tests), 32 px",
         lambda: _attiqa_model(tmp / "a1", TINY_RESNET, 32), attiqa_cost),
        ("attiqa", "ResNet-50 shape, 224 px",
         lambda: _attiqa_model(tmp / "a2", RESNET50, 224), attiqa_cost),
        ("clip_attributes", "tiny CLIP (tests), 32 px",
         lambda: build_tiny_clip(tmp / "c1"), clip_cost),
        ("clip_attributes", "CLIP ViT-B/32 shape, 224 px",
         lambda: build_clip(tmp / "c2", **clip_b32), clip_cost),
        ("qalign_levels", "tiny LLaVA (iqa_ray.devtools.smoke)",
         lambda: _llava_folder(tmp / "l1", None), llava_folder_cost),
        ("qalign_levels", "LLaVA cpu-small (random_vlm)",
         lambda: _llava_folder(tmp / "l2", "cpu-small"), llava_folder_cost),
    ]
    runners, costs = [], []
    for name, _, build, cost in plans:
        folder = build()
        vlm = get_method(name).uses_vlm
        method = get_method(name)({} if vlm else {"model": str(folder)})
        ctx = _context(folder if vlm else None, args.batch)
        method.setup(ctx)
        runners.append((method, ctx))
        costs.append(cost(folder))
    rates = interleaved_rates(runners, images, args.batch, args.repeat)
    rows = [(name, label, *cost, rate)
            for (name, label, _, _), cost, rate in zip(plans, costs, rates, strict=True)]
    lmm_rate = (default_lmm_rate(images[:args.default_lmm_images])
                if args.default_lmm_images else float("nan"))
    rows.append(("qalign_levels", "llava-interleave-qwen-0.5b shape (default)",
                 *default_lmm_cost(), lmm_rate))
    return rows


def print_table(args: argparse.Namespace, rows: list[tuple[str, str, int, float, float]]) -> None:
    """The Markdown table, the measured attiqa / baseline ratio and the compute ratio."""
    print(f"\n{args.images} images of 384x288, batches of {args.batch}, best of {args.repeat} "
          "interleaved rounds\n")
    print("| method | model | parameters per image | GFLOP per image | images/s | vs baseline |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    base = rows[BASELINE][4]
    for name, label, params, flops, rate in rows:
        shown = "not run" if np.isnan(rate) else f"{rate:.1f}"
        ratio = "" if np.isnan(rate) else f"{rate / base:.2f}x"
        print(f"| {name} | {label} | {params:,} | {flops / 1e9:.3f} | {shown} | {ratio} |")
    print("\nParameters per image: CLIP counts its image tower only (the prompts' text "
          "embeddings are computed once per actor). Baseline: qalign_levels on the tiny LLaVA.")
    print(f"attiqa (tiny ResNet) / qalign_levels (tiny LLaVA), measured side by side: "
          f"{rows[0][4] / base:.2f}x images/s")
    lmm, cheap = rows[-1], rows[1]
    print(f"compute per image, default LMM / attiqa ResNet-50: {lmm[3] / cheap[3]:.0f}x"
          + ("" if np.isnan(lmm[4]) else f"; measured speed ratio {cheap[4] / lmm[4]:.1f}x"))


if __name__ == "__main__":
    main()
