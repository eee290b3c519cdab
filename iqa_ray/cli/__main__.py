"""``python -m iqa_ray.cli``: the ``iqa-ray`` command without the installed script."""

from __future__ import annotations

import sys

from iqa_ray.cli.main import main

sys.exit(main())
