"""Operator-side tooling: the local stack, the operator CLI, reports. Imports torch where it must."""
