"""Native mPLUG-Owl2 (Q-Align / Compare2Score / DeQA-Score checkpoints) on torch + transformers 5.

Loads the published checkpoints by their own parameter names through
``MplugOwl2ForCausalLM.from_pretrained`` (no remote code; ``auto_map`` is ignored), with
``MplugOwl2Processor`` building the reference's pixels and prompt ids. Exports resolve lazily,
so importing this package imports neither torch nor transformers. ``runtime`` plugs the family
into the transformers backend (``load``; prompts in the reference conversation of
``conversation``, answer words read as ``tokenizer(word).input_ids[1]``, prefix sharing through
``inputs_embeds`` + ``image_mask``); ``tiny`` builds a tiny random checkpoint for tests.

Checked against the reference (``shared/models/tiny-mplug-owl2``, float32 CPU): resized pixels
(bit-identical), vision tower and abstractor outputs, prompt ids, level logits / probabilities /
scores of every prompt variant, full last-position logits and the Compare2Score probabilities.

Deliberate differences from the reference code:

* Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` by default
  (``attn_implementation="sdpa"``); ``"eager"`` is the reference's matmul-softmax (float32
  softmax). Both agree with the fixture to ~5e-6 on the logits.
* Batches may be left padded (``attention_mask`` zeros on the left; position ids counted from
  the mask); the reference supports neither padding nor batches of different prompt lengths.
  A padding query attends to itself only, so no row is ever fully masked.
* Images are passed pre-expanded: the processor writes ``num_image_tokens`` (65) sentinels
  (-200) per image, and the model fills them in order, where the reference splices one -200
  into 65 positions inside the forward. ``inputs_embeds`` + ``image_mask`` is a second entry
  (features already spliced), used for prefix sharing; there ``image_mask`` is required, since
  without it image positions would silently take the text weights.
* ``get_image_features`` returns a plain (n, 65, hidden) tensor (no ``ModelOutput``).
* ``from_pretrained`` without ``dtype`` follows transformers 5 ("auto": the checkpoint's dtype,
  float16 for the fixture); pass ``dtype=`` explicitly. No ``generate`` (no GenerationMixin).
* A KV cache (transformers ``Cache``, ``cache.update(k, v, layer_idx)``) is supported, with
  explicit or mask-derived ``position_ids``; the reference's own cache path was not compared.
* Rotary frequencies are recomputed on every forward (never a buffer), so the transformers 5
  loader cannot leave them uninitialised; the abstractor's sin-cos tables are loaded from the
  checkpoint (persistent buffers), and only computed for a freshly initialised model.
* The multiway modules gather/scatter positions by modality (as the reference) and support
  ``num_key_value_heads < num_attention_heads`` (the reference does not).
* Prompts are tokenized with ``sentencepiece`` directly: transformers 5's ``LlamaTokenizer``
  gives different ids for chunks that start with a space (Compare2Score, the template prompt).
  Prompt text containing ``<s>``, ``</s>`` or ``<unk>`` is refused.
* Logits come back in float32 whatever the model's dtype (the LM head runs in that dtype).

Not verified: the real 7B weights (none reachable here), fp16 / bf16 numerics against the
reference's GPU pipeline, and whether the real hub repos' tokenizer files differ from the
fixture's (``tokenizer.model`` is required).
"""

from __future__ import annotations

from iqa_ray.backends.families import lazy_exports

_EXPORTS = {
    "MplugOwl2Config": "configuration",
    "MplugOwl2Model": "modeling",
    "MplugOwl2ForCausalLM": "modeling",
    "IMAGE_TOKEN_INDEX": "configuration",
    "register_mplug_owl2": "modeling",
    "MplugOwl2Processor": "processing",
    "IMAGE_TOKEN": "configuration",
    "ImageSettings": "processing",
    "expand_to_square": "processing",
    "preprocess_images": "processing",
    "tokenize_with_images": "processing",
    "LlamaSentencePieceTokenizer": "tokenization",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
