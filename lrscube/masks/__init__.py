"""From intervals to masks: epochs and the mask cube, CRDS deliveries (rule, checks, records) and applying a mask to products."""
