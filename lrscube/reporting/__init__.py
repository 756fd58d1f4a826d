"""What people look at: the HTML report, one pixel's history, the spectral check."""
