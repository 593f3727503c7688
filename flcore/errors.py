"""The one exception type actions raise to reject a request."""


class ApiError(Exception):
    """A request that must be refused with an HTTP status and a clear message.

    Raised before any write, so a rejected request leaves the database as it was.
    """

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message
