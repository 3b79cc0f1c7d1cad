"""hasim's analysis: comparisons, overhead, closed forms, plots and the report."""
