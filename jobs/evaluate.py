"""How good are the scores: `python jobs/evaluate.py --config jobs/configs/evaluate.yaml`.

Joins scored runs to human labels (CSV image path + mos, JSON img_path/gt_score, or image_id
keys) and writes <output>/evaluations/<name>/report.md, report.html, metrics.parquet, PNG plots
(needs `pip install 'iqa_ray[report]'`, or `plots: false`) and summary.json. No Ray: pandas on
the driver. Same as `iqa-ray evaluate`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout / job working dir

from iqa_ray.cli.post import add_evaluate_arguments, run_evaluate_command, standalone

if __name__ == "__main__":
    sys.exit(standalone(add_evaluate_arguments, run_evaluate_command, __doc__.splitlines()[0]))
