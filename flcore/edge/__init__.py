"""The edge: requests in, responses out (route table, authentication, settings, errors to statuses)."""
