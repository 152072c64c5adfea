"""Pure pandas over the results files: load, aggregate, models, optimum, verdicts, summaries."""
