"""Identity's errors."""

from shop.kernel.errors import Conflict, NotFound, Unauthorized


class EmailTaken(Conflict):
    slug = "email-taken"
    title = "Email already registered"


class InvalidCredentials(Unauthorized):
    title = "Invalid credentials"


class UserNotFound(NotFound):
    slug = "user-not-found"
    title = "User not found"


class AdminBootstrapRefused(RuntimeError):
    """Start-up stops: the configured admin's email names an account the bootstrap cannot
    vouch for (not an admin, or the configured password does not verify).

    Not a :class:`~shop.kernel.errors.ShopError`: no request sees it, the process does not
    start.
    """
