"""The ``iqa-ray`` command line: ``score``, ``filter``, ``evaluate``, ``report``, ``models``.
Each command runs the same code as the matching ``jobs/*.py`` entry point."""
