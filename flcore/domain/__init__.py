"""The domain: a job and its typed settings, devices, the criteria language."""
