"""The round engine: the job's lifecycle, closing rounds, the round modes, picking, the lease, rules.

Importing it registers the round modes (synchronous rounds, FedBuff, secure rounds) that jobs run in.
"""

from flcore.domain import modes
from flcore.engine.fedbuff import FedBuff
from flcore.engine.secure import SecureRounds
from flcore.engine.sync import SyncRounds

modes.register("sync", SyncRounds())
modes.register("async", FedBuff())
modes.register("secure", SecureRounds())  # sync rounds of a job with secure_aggregation
