"""hasim's batches: runs, seeds, result directories and summaries."""
