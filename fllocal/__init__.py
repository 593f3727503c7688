"""What runs on the user's own machines, never in the function: torch models,
datasets and ``.env`` settings, shared by the clients and the operator CLI."""
