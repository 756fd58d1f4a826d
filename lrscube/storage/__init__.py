"""The store and what lives in it: the exposure cube, detect's scratch, run records, checksums."""
