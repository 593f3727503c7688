"""The serverless federated-learning function: everything it ships, and nothing that imports torch.

Its sub-packages read as its architecture: ``edge`` (requests in, responses
out), ``actions`` (one function per action), ``engine`` (a job's rounds),
``domain`` (jobs, settings, devices), ``shared`` (what clients import too) and
``storage`` (MongoDB and GridFS). ``server_aws`` and ``server_ow`` only
translate platform events into :func:`flcore.edge.api.handle`.
"""
