"""hasim's the assessment of a real cluster: layouts, tuning, verdict and report."""
