"""Shared by the fixture-free mPLUG-Owl2 tests: a tiny SentencePiece tokenizer trained on the
spot, a tiny random model, and the folder ``save_pretrained`` writes for them."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from iqa_ray.backends.families.mplug_owl2.configuration import MplugOwl2Config
from iqa_ray.backends.families.mplug_owl2.modeling import MplugOwl2ForCausalLM
from iqa_ray.backends.families.mplug_owl2.processing import MplugOwl2Processor
from iqa_ray.backends.families.mplug_owl2.tiny import spread_weights, write_processor_files

TOL = 1e-4  # the fixture's float32 logits tolerance
CORPUS = [
    "USER: How would you rate the quality of this image?",
    "ASSISTANT: The quality of the image is good.",
    "Compared with the first image, what is your quality rating for second image?",
    "excellent good fair poor bad inferior worse similar better superior",
]
PROMPT = "USER: How would you rate the quality of this image?\n<|image|>\nASSISTANT: The quality is"
PAIR = "USER: <|image|> <|image|> Compared with the first image, rate the second.\nASSISTANT: It is"
TEXT_ONLY = "USER: Is bad worse than poor?\nASSISTANT: It is"


def train_tokenizer(folder: Path) -> int:
    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 10), model_writer=buffer, vocab_size=400,
        model_type="bpe", byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        remove_extra_whitespaces=False, normalization_rule_name="identity",
        hard_vocab_limit=False, minloglevel=2,
    )
    (folder / "tokenizer.model").write_bytes(buffer.getvalue())
    return spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model")).get_piece_size()


def tiny_config(vocab_size: int, **overrides: object) -> MplugOwl2Config:
    """A 2-layer model over 56 px images (4x4 patches, 8 queries -> 9 image tokens)."""
    visual = {
        "visual_model": {
            "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "image_size": 56, "patch_size": 14,
            "layer_norm_eps": 1e-6,
        },
        "visual_abstractor": {
            "num_learnable_queries": 8, "hidden_size": 16, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 24, "encoder_hidden_size": 16,
            "grid_size": 4, "layer_norm_eps": 1e-6,
        },
    }
    values: dict[str, object] = {
        "vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
        "rms_norm_eps": 1e-5, "visual_config": visual,
    }
    values.update(overrides)
    return MplugOwl2Config(**values)


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Weights drawn so that every part matters (the default init leaves outputs near zero)."""
    spread_weights(model, seed)


def write_folder(folder: Path, model: MplugOwl2ForCausalLM, dtype: torch.dtype) -> None:
    copy.deepcopy(model).to(dtype).save_pretrained(folder)
    write_processor_files(folder, 56)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A saved tiny model folder (float32 weights), the in-memory model and the processor."""
    folder = tmp_path_factory.mktemp("tiny_owl2")
    vocab = train_tokenizer(folder)
    torch.manual_seed(0)
    model = MplugOwl2ForCausalLM(tiny_config(vocab)).eval()
    randomize(model, seed=1)
    write_folder(folder, model, torch.float32)
    return {"folder": folder, "model": model, "proc": MplugOwl2Processor.from_pretrained(folder)}


def random_images(seed: int, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in shapes]


def load(folder: Path, **kwargs: object) -> MplugOwl2ForCausalLM:
    return MplugOwl2ForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs).eval()


def last_logits(model: MplugOwl2ForCausalLM, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits[:, -1]
