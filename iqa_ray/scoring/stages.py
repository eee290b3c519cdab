"""Ray Data stage classes (fetch, decode, score, write): thin wiring over pure functions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from iqa_ray import io
from iqa_ray.distortions import apply_distortion
from iqa_ray.errors import RowError
from iqa_ray.images import load_image
from iqa_ray.inputs.state import SCORE_ROW_GROUP
from iqa_ray.methods import ImageBatch, ScoringMethod, VariantSpec, get_method, method_context
from iqa_ray.schema import Batch, Col, ErrorCode, variant_column
from iqa_ray.scoring import outputs, progress
from iqa_ray.scoring.config import RunConfig

logger = logging.getLogger(__name__)
_PLACEHOLDER = np.zeros((1, 1, 3), dtype=np.uint8)  # image slot of a row that already failed


def check_columns(batch: Batch | pa.Table, required: tuple[str, ...], stage: str) -> None:
    """Raise ValueError naming the stage and the missing columns (a contract violation)."""
    present = set(batch.column_names if isinstance(batch, pa.Table) else batch)
    missing = [c for c in required if c not in present]
    if missing:
        raise ValueError(f"{stage}: input batch lacks columns {missing} (has {sorted(present)})")


def object_array(values: list[Any]) -> np.ndarray:
    """A 1-D object array (ragged images, optional strings) without numpy's shape guessing."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def run_methods(cfg: RunConfig) -> list[tuple[str, ScoringMethod]]:
    """(label, method instance) for each configured method, in config order."""
    return [(spec.name, get_method(spec.method)(spec.params)) for spec in cfg.methods]


def needed_variants(methods: list[tuple[str, ScoringMethod]]) -> list[VariantSpec]:
    """Union of the derived images every method needs, in first-seen order."""
    seen: dict[str, VariantSpec] = {}
    for _, method in methods:
        for variant in method.variants():
            seen.setdefault(variant.key, variant)
    return list(seen.values())


def model_geometry(
    cfg: RunConfig, methods: list[tuple[str, ScoringMethod]]
) -> Callable[[np.ndarray], np.ndarray] | None:
    """The model's own resize and crop for the decode stage, or None: off in the config, a
    method that reads the images itself (not through the shared VLM), a backend other than
    transformers, or a model whose preprocessing does not split exactly (tiling by aspect)."""
    if not cfg.stages.model_pixels_on_decode or cfg.model.backend != "transformers":
        return None
    if not all(method.uses_vlm for _, method in methods):
        return None
    from iqa_ray.backends.transformers.pixels import load_pixel_plan

    try:
        plan = load_pixel_plan(cfg.model)
    except Exception as exc:  # the score actor reports a model that cannot load, properly
        logger.warning("model geometry not available to the decode stage (%s: %s); images are "
                       "resized in the score actor", type(exc).__name__, exc)
        return None
    return plan.geometry if plan is not None else None


class FetchImages:
    """CPU stage: read each object's bytes (threaded: storage reads are latency-bound)."""

    requires = (Col.IMAGE_ID, Col.URI)

    def __init__(self, cfg: RunConfig, threads: int = 16) -> None:
        self._cfg = cfg
        self._pool = ThreadPoolExecutor(max_workers=threads)

    def _fetch(self, uri: str) -> tuple[bytes, str, str]:
        retry, guard = self._cfg.retry, self._cfg.image
        try:
            data = io.read_bytes(
                uri, self._cfg.input.storage_options, attempts=retry.attempts,
                base_delay_s=retry.base_delay_s, max_delay_s=retry.max_delay_s,
                max_bytes=guard.max_bytes,
            )
            return data, "", ""
        except RowError as err:
            return b"", str(err.code), err.message
        except Exception as exc:  # the per-row boundary: any other failure is this row's
            return b"", str(ErrorCode.FETCH_FAILED), f"{type(exc).__name__}: {exc}"

    def __call__(self, batch: Batch) -> Batch:
        check_columns(batch, self.requires, type(self).__name__)
        results = list(self._pool.map(self._fetch, [str(u) for u in batch[Col.URI]]))
        return {
            Col.IMAGE_ID: batch[Col.IMAGE_ID],
            Col.URI: batch[Col.URI],
            Col.BYTES: object_array([r[0] for r in results]),
            Col.ERROR_CODE: object_array([r[1] for r in results]),
            Col.ERROR_MESSAGE: object_array([r[2] for r in results]),
        }


class DecodeImages:
    """CPU stage: decode, resize to the model budget, make every variant (prior) image and,
    where the model's preprocessing splits exactly, bring every image to the model's input
    geometry (``stages.model_pixels_on_decode``), so the score actor does no per-image resize.
    """

    requires = (Col.IMAGE_ID, Col.BYTES, Col.ERROR_CODE, Col.ERROR_MESSAGE)

    def __init__(self, cfg: RunConfig) -> None:
        self._cfg = cfg
        methods = run_methods(cfg)
        self._variants = needed_variants(methods)
        self._geometry = model_geometry(cfg, methods)

    def _one(self, image_id: int, data: bytes) -> dict[str, Any]:
        image, (height, width) = load_image(data, self._cfg.image)
        images = {Col.IMAGE: image}
        for variant in self._variants:
            try:
                images[variant_column(variant.key)] = apply_distortion(
                    image, variant.distortion, variant.severity, seed_key=image_id
                )
            except Exception as exc:  # a prior that cannot be made fails this row only
                raise RowError(ErrorCode.DISTORT_FAILED, f"{variant.key}: {exc}") from exc
        if self._geometry is not None:  # after the priors: they are made at image.max_side
            images = {column: self._geometry(im) for column, im in images.items()}
        return {**images, Col.HEIGHT: height, Col.WIDTH: width}

    def __call__(self, batch: Batch) -> Batch:
        check_columns(batch, self.requires, type(self).__name__)
        columns = [Col.IMAGE, Col.HEIGHT, Col.WIDTH] + [
            variant_column(v.key) for v in self._variants
        ]
        rows: dict[str, list[Any]] = {c: [] for c in columns}
        codes = [str(c) for c in batch[Col.ERROR_CODE]]
        messages = [str(m) for m in batch[Col.ERROR_MESSAGE]]
        pairs = zip(batch[Col.IMAGE_ID], batch[Col.BYTES], strict=True)
        for i, (image_id, data) in enumerate(pairs):
            result: dict[str, Any] = {}
            if not codes[i]:  # "" = no error so far (all-null object columns do not survive Arrow)
                try:
                    result = self._one(int(image_id), bytes(data))
                except RowError as err:
                    codes[i], messages[i] = str(err.code), err.message
                except Exception as exc:  # the per-row boundary of decoding
                    codes[i] = str(ErrorCode.DECODE_FAILED)
                    messages[i] = f"{type(exc).__name__}: {exc}"
            for column in columns:
                default = 0 if column in (Col.HEIGHT, Col.WIDTH) else _PLACEHOLDER
                rows[column].append(result.get(column, default))
        # Ids, URIs and any per-image columns of the input (source, key, carried) pass through.
        replaced = (Col.BYTES, Col.ERROR_CODE, Col.ERROR_MESSAGE)
        out = {c: v for c, v in batch.items() if c not in replaced}
        out.update({c: object_array(v) for c, v in rows.items()})
        out[Col.HEIGHT] = np.asarray(rows[Col.HEIGHT], dtype=np.int32)
        out[Col.WIDTH] = np.asarray(rows[Col.WIDTH], dtype=np.int32)
        out[Col.ERROR_CODE], out[Col.ERROR_MESSAGE] = object_array(codes), object_array(messages)
        return out


class ScoreImages:
    """GPU stage: one model per actor serves every configured method on each batch."""

    requires = (Col.IMAGE_ID, Col.URI, Col.IMAGE, Col.ERROR_CODE, Col.ERROR_MESSAGE)

    def __init__(self, cfg: RunConfig, progress: Any = None) -> None:
        self._progress = progress  # a ProgressCounter actor handle, or None
        self._methods = run_methods(cfg)
        self._variants = needed_variants(self._methods)
        self._ctx = method_context(cfg.model, cfg.image)
        for _, method in self._methods:
            method.setup(self._ctx)  # loads the model once and checks every word
        self._schema = outputs.wide_schema(self._methods, outputs.input_fields(cfg.input))

    def __call__(self, batch: Batch) -> pa.Table:
        check_columns(batch, self.requires, type(self).__name__)
        ok = [i for i, code in enumerate(batch[Col.ERROR_CODE]) if not str(code)]
        images = ImageBatch(
            image_ids=np.asarray(batch[Col.IMAGE_ID])[ok],
            query=[batch[Col.IMAGE][i] for i in ok],
            variants={v.key: [batch[variant_column(v.key)][i] for i in ok] for v in self._variants},
        )
        results = {label: method.score_batch(images, self._ctx) for label, method in self._methods}
        table = outputs.wide_table(batch, ok, results, self._schema)
        if self._progress is not None:
            self._report(table)
        return table

    def _report(self, table: pa.Table) -> None:
        """Tell the driver's progress counter (fire and forget; never fails the batch)."""
        try:
            columns = outputs.error_code_columns(self._schema)
            self._progress.add.remote(*progress.batch_counts(table, columns))
        except Exception as exc:
            logger.debug("progress report failed: %s", exc)


def write_scores(table: pa.Table, *, cfg: RunConfig, scores_uri: str, attempt: int) -> pa.Table:
    """Write stage (task): one committed Parquet file per batch of whole images."""
    methods = [(spec.name, get_method(spec.method)) for spec in cfg.methods]
    schema = outputs.long_schema(methods, outputs.input_fields(cfg.input))
    long = outputs.long_table(table, [m[0] for m in methods], attempt, schema)
    name = outputs.part_name(table.column(Col.IMAGE_ID).to_numpy(), attempt)
    # Small row groups let resume-state tasks read only the id ranges they own.
    io.write_parquet_atomic(io.join(scores_uri, name), long, cfg.output.storage_options,
                            row_group_size=SCORE_ROW_GROUP)
    errors = long.column(Col.ERROR_CODE).null_count
    return pa.table(
        {"file": [name], "images": [table.num_rows], "rows": [long.num_rows],
         "error_rows": [long.num_rows - errors]}
    )
