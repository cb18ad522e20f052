"""Reports over finished runs: the sweep summary (table and rate-distortion plot) that scripts/ and the dashboard
reuse."""
