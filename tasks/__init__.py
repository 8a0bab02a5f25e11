"""The worker side: the Huey queue and tasks, the reply pipeline, the worker process."""
