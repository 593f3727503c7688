"""Platform-neutral core of the serverless federated-learning function.

Everything the function needs lives here once; ``server_aws`` and
``server_ow`` only translate platform events into :func:`flcore.edge.api.handle`.
Modules that import torch (``models``, ``data``) are used by clients and the
operator CLI only, never by the function.
"""

__version__ = "0.1.0"
