"""Knowing it works: the simulator (sky, response, defects, behaviours, look-alikes) and the evaluation against its truth."""
