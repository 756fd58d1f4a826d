"""From files to the cube: which inputs are exposures, reading level-2 products, the ingest run."""
