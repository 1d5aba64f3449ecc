"""Stand-ins for a Kubernetes API server: KServe InferenceServices, and pods, Jobs, TrainJobs and JobSets."""
