"""What runs on a GPU worker, or describes one: the inference engines and the worker agent."""
