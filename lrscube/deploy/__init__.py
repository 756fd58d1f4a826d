"""Where the work runs: a client for an existing scheduler or an embedded cluster, and the specs for SLURM, PBS and Kubernetes."""
