"""From the cube to defect intervals: spatial residuals, each pixel's normal state, temporal screens, change points, classes, the compiled kernels, the two-stage run."""
