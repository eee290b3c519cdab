"""Keep the good images of scored runs: `python jobs/filter.py --config jobs/configs/filter.yaml`.

Writes <output>/filters/<name>/keep.parquet, reject.parquet (with the reason), report.html and
summary.json, and copies kept images when `copy_to` is set (idempotent). `--dry-run` only prints
how many images each group would keep. No Ray: pandas on the driver, a thread pool for the
copies. Same as `iqa-ray filter`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout / job working dir

from iqa_ray.cli.post import add_filter_arguments, run_filter_command, standalone

if __name__ == "__main__":
    sys.exit(standalone(add_filter_arguments, run_filter_command, __doc__.splitlines()[0]))
