"""Developer tools: tiny random-weight models for tests and plumbing demos (``smoke``,
``tiny_attiqa``) and synthetic sample images (``samples``). Scores from these models mean
nothing."""
