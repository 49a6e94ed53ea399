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
