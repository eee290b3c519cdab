"""After scoring: reading committed score tables (``scores``), keep/reject rules and the filter
job (``filter``, ``filter_job``), agreement with human labels (``metrics``, ``labels``,
``evaluate``) and plots (``plots``)."""
