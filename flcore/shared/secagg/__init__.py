"""Secure aggregation (SecAgg+, Bell et al. 2020): what devices and the function both compute.

``shamir``: secret sharing over a prime field; ``masking``: quantisation, the
mask generator and the neighbour graph; ``channel``: key agreement and the
authenticated encryption of shares between two devices. The protocol's stages
are run by :mod:`flcore.engine.secure` (the function, a relay that learns only
the sum) and ``clients/secure.py`` (a device).
"""
