"""Sources: turn files or Kubernetes watches into validated resources."""
