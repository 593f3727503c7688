"""Federated clients: a Flask app each, polling the function on an APScheduler schedule."""
