"""The scoring job: its config (``RunConfig``), the Ray Data stages, the output table layout,
the driver (``pipeline.run``) and the run's record in the bucket. Import the modules directly;
this package stays light."""
