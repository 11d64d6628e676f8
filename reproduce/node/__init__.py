"""What runs inside a job, on a compute node: training one run, its
preflight, the signal hook, the work-dir lock, the lease, weights and the
fingerprints it records. It imports nothing of the driver side (the planner,
status, reports, the CLI): a node needs only the payload it was sent."""
