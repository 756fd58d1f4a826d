"""Configuration: the mode profiles (what a detector and mode look like) and the DQ bits."""
