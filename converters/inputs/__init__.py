"""What a build reads: the model (and its safety checks), datasets, array files, preprocessing."""
