"""Training data for ATTIQA: label tables (pseudo-labels or MOS), pixel preparation, and the
Ray Data plan (label rows -> tasks that read and decode images from a folder or bucket).

Torch-free: batches are numpy; Ray Train turns them into tensors.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from iqa_ray import io
from iqa_ray.analysis import labels
from iqa_ray.errors import ConfigError, RowError
from iqa_ray.images import decode_image
from iqa_ray.inputs.done import latest_rows
from iqa_ray.methods.attiqa.backbone import prepare_pixels
from iqa_ray.methods.attiqa.prompts import ATTRIBUTES
from iqa_ray.schema import Batch, Col

logger = logging.getLogger(__name__)
PIXELS = "pixels"  # uint8 (S, S, 3) network input
TARGETS = "targets"  # float32 (T,) training targets
MOS = "mos"
_BLOCKS = 200  # label-table blocks handed to Ray Data


def _read_tables(uri: str, storage_options: dict[str, Any],
                 columns: list[str] | None = None) -> pa.Table:
    if uri.lower().endswith((".parquet", ".csv", ".csv.gz")):
        return io.read_table_file(uri, storage_options)
    files = io.list_parquet(uri, storage_options)
    if not files:
        raise ConfigError(f"no Parquet files under {uri!r}")
    return pa.concat_tables([io.read_parquet(f, storage_options, columns) for f in files],
                            promote_options="default")


def load_attribute_labels(uri: str, storage_options: dict[str, Any], method: str) -> pa.Table:
    """Pseudo-labels as a table ``uri`` + the five attribute columns (float32).

    ``uri`` is a scoring run folder (its ``scores/`` rows of ``method`` without errors, latest
    attempt per image) or a Parquet/CSV table or folder with those columns.

    Raises:
        ConfigError: no rows, or missing attribute columns.
    """
    scores = io.join(uri, "scores")
    if io.exists(scores, storage_options) and io.list_parquet(scores, storage_options):
        keys = [Col.IMAGE_ID, Col.METHOD, Col.ERROR_CODE, Col.ATTEMPT, Col.URI]
        try:
            table = _read_tables(scores, storage_options, [*keys, *ATTRIBUTES])
        except pa.ArrowInvalid as exc:  # a run without the attribute columns
            raise ConfigError(f"run {uri!r} has no attribute columns: {exc}") from exc
        table = table.filter(pc.equal(table.column(Col.METHOD), method))
        table = latest_rows(table)
        table = table.filter(pc.is_null(table.column(Col.ERROR_CODE)))
    else:
        table = _read_tables(uri, storage_options)
    missing = [c for c in (Col.URI, *ATTRIBUTES) if c not in table.column_names]
    if missing:
        raise ConfigError(f"pseudo-labels at {uri!r} lack columns {missing}")
    if table.num_rows == 0:
        raise ConfigError(f"no usable pseudo-label rows (method {method!r}) at {uri!r}")
    columns = {Col.URI: table.column(Col.URI).cast(pa.string())}
    columns.update({a: table.column(a).cast(pa.float32()) for a in ATTRIBUTES})
    return pa.table(columns)


def load_mos_labels(uri: str, storage_options: dict[str, Any], images_root: str | None,
                    key_column: str | None = None, mos_column: str | None = None) -> pa.Table:
    """MOS table ``uri`` + ``mos`` (float32) from CSV/JSON (``labels.read_labels``) or Parquet.

    Relative keys are joined to ``images_root``; rows without a MOS are dropped.
    """
    if uri.lower().endswith(".parquet"):
        frame = labels.read_labels(io.read_table_file(uri, storage_options).to_pandas(),
                                   key_column=key_column, mos_column=mos_column)
    else:
        frame = labels.read_labels(io.read_bytes(uri, storage_options), key_column=key_column,
                                   mos_column=mos_column)
    frame = frame[frame[labels.MOS].notna()]
    if frame.empty:
        raise ConfigError(f"no MOS values in {uri!r}")
    uris = [_image_uri(str(k), images_root) for k in frame[labels.KEY]]
    return pa.table({Col.URI: pa.array(uris, pa.string()),
                     MOS: pa.array(frame[labels.MOS].to_numpy(), pa.float32())})


def _image_uri(key: str, root: str | None) -> str:
    if "://" in key or key.startswith("/") or root is None:
        return key
    return io.join(root, key)


def _load_one(uri: str, size: int, storage_options: dict[str, Any]) -> np.ndarray | None:
    try:
        data = io.read_bytes(uri, storage_options)
        image = decode_image(data, max_pixels=100_000_000, min_side=8)
        return prepare_pixels([image], size)[0]
    except (RowError, OSError) as exc:
        logger.warning("training image skipped: %s: %s", uri, exc)
        return None


def load_training_images(batch: Batch, *, targets: Sequence[str], image_size: int,
                         storage_options: dict[str, Any], threads: int = 8) -> Batch:
    """Ray Data task: read, decode and prepare each image; rows that fail are dropped (logged).

    A task, not an actor: every epoch re-runs this stage, and tasks reuse Ray's pooled worker
    processes where a fresh actor pool would pay its start-up once per epoch.
    """
    missing = [c for c in (Col.URI, *targets) if c not in batch]
    if missing:
        raise ValueError(f"load_training_images: input batch lacks columns {missing}")
    uris = [str(u) for u in batch[Col.URI]]
    with ThreadPoolExecutor(max_workers=threads) as pool:  # storage reads are latency-bound
        loaded = list(pool.map(lambda u: _load_one(u, image_size, storage_options), uris))
    keep = [i for i, pixels in enumerate(loaded) if pixels is not None]
    values = np.stack([np.asarray(batch[t], dtype=np.float32) for t in targets], axis=1)
    empty = np.zeros((0, image_size, image_size, 3), np.uint8)
    return {PIXELS: np.stack([loaded[i] for i in keep]) if keep else empty,
            TARGETS: values[keep]}


def training_dataset(table: pa.Table, targets: Sequence[str], image_size: int,
                     storage_options: dict[str, Any], loader: Any, cache: bool = False) -> Any:
    """The lazy Ray Data plan: label rows -> prepared pixels + a targets vector.

    With ``cache`` the decoded images are materialised once in the object store (small
    fine-tuning sets); otherwise every epoch streams them from storage again.
    """
    import ray

    # Many blocks, so that several loader tasks share the work.
    rows = max(loader.batch_size, -(-table.num_rows // _BLOCKS))
    blocks = [table.slice(i, rows) for i in range(0, table.num_rows, rows)]
    dataset = ray.data.from_arrow(blocks).map_batches(
        load_training_images, batch_size=loader.batch_size, batch_format="numpy",
        fn_kwargs={"targets": list(targets), "image_size": image_size,
                   "storage_options": storage_options},
        num_cpus=loader.num_cpus, compute=ray.data.TaskPoolStrategy(size=loader.max_actors),
    )
    return dataset.materialize() if cache else dataset
