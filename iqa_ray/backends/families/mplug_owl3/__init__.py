"""Native mPLUG-Owl3 (``mPLUG/mPLUG-Owl3-7B-240728`` architecture) on torch / transformers 5.

Re-implements the checkpoint's remote code (written for transformers 4.x, unusable with 5.x)
without executing it: ``MplugOwl3Config`` / ``MplugOwl3ForCausalLM`` (SigLIP tower, linear
projector, Qwen2 with hyper attention, next-token logits) and ``MplugOwl3Processor`` (crops,
cut prompts, chatml text, left-padded batches). ``runtime`` plugs them into the transformers
backend (``TransformersBackend(ModelConfig(id=<folder>))`` for ``model_type: mplugowl3``; unshared
path; processor options from ``model.options``, see ``iqa_ray.backends.family_options``). Checked
against the reference fixture ``shared/models/tiny-mplug-owl3`` (float32 CPU, every case within
~4e-6 of the reference logits, through the model and through the backend).

Deliberate differences from the reference (same outputs unless stated):

* Batching: the reference builds batch 1 only. Here rows are LEFT padded; positions restart at 0
  on each row's first real token; padding keys are masked (a padding query sees only itself);
  every row has its own ``media_offset``, crops (``num_crops``) and MI-RoPE key positions.
* Only the crops the hyper attention uses (``media_offset[-1]`` per row) are run through the
  vision tower; the reference encodes all crops and ignores the rest. The last SigLIP layer,
  ``post_layernorm`` and the pooling ``head`` are loaded (names map one-to-one) but never run.
* No ``inv_freq`` / ``position_ids`` buffers: RoPE tables (text and MI-RoPE, float32) are
  computed from the config on every forward, so the v5 loader cannot leave them on the meta
  device or uninitialised.
* ``auto_map`` is dropped from the config (a saved config names ``MplugOwl3ForCausalLM`` and
  never points at remote code). No KV cache and no ``generate``: scoring only.
* The language model always uses torch SDPA (explicit boolean masks); the SigLIP tower follows
  the config's attention implementation (``sdpa`` by default). No flash-attention-2 path.
* Options that are NOT the reference, off by default (``model.options`` in a run):
  ``pair_cut_shapes="per_image"`` (each image gets its own cut grid; the reference pairs the
  k-th ``<|image|>`` with ``cut_shape[k]``, two entries per image, so a second image gets the
  (1, 1) template) and ``drop_last_assistant_content=False`` (keep an assistant answer prefix
  such as "The quality of the image is "; the reference drops it in inference mode).
* Errors where the reference may not check: the number of ``<|image|>`` markers must equal the
  number of images, a row may not have fewer crops than placeholders, padding must be on the left.

Not verified here: the real 7B weights; bf16 / fp16 numerics and flash attention against the
reference (bf16 only runs, on CPU); any CUDA execution (no GPU was available for this work); the
real tokenizer's handling of ``<|image|>`` (the fixture's trimmed tokenizer splits it into five
ordinary tokens; the code tokenises the literal and handles one or several tokens); system
messages and earlier assistant turns in the chat template (only the Q-Debias two-message form is
in the fixture); ``cut_enable=False`` and video inputs (not implemented); later hub revisions of
the remote code (the fixture used the EgoThink snapshot of September 2024).
"""

from __future__ import annotations

from iqa_ray.backends.families import lazy_exports

_EXPORTS = {
    "MplugOwl3Config": "configuration",
    "register_config": "configuration",
    "MplugOwl3ForCausalLM": "modeling",
    "MplugOwl3PreTrainedModel": "modeling",
    "register_auto_classes": "modeling",
    "MplugOwl3Processor": "processing",
    "MplugOwl3Batch": "processing",
    "build_chat_text": "processing",
    "cut_prompt": "processing",
    "cut_shapes_for_placeholders": "processing",
    "tokenize_with_placeholders": "processing",
    "GRID_SQU_6": "image_processing",
    "crop_image": "image_processing",
    "select_anchor": "image_processing",
    "build_tiny_checkpoint": "tiny",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
