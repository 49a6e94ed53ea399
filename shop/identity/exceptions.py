"""Identity's errors."""

from shop.kernel.errors import (
    Conflict,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
)


class EmailTaken(Conflict):
    slug = "email-taken"
    title = "Email already registered"


class InvalidCredentials(Unauthorized):
    title = "Invalid credentials"


class UserNotFound(NotFound):
    slug = "user-not-found"
    title = "User not found"


class TooManySignIns(TooManyRequests):
    """Too many failed sign-ins on this account or from this address: back off."""

    slug = "too-many-sign-in-attempts"
    title = "Too many failed sign-ins"


class PasswordChecksBusy(ServiceUnavailable):
    """Every password-hashing slot of this process is taken and stayed taken."""

    slug = "sign-in-busy"
    title = "Too many sign-ins at once"
    headers = {"Retry-After": "1"}


class AdminBootstrapRefused(RuntimeError):
    """Start-up stops: the configured admin's email names an account the bootstrap cannot
    vouch for (not an admin, or the configured password does not verify).

    Not a :class:`~shop.kernel.errors.ShopError`: no request sees it, the process does not
    start.
    """
