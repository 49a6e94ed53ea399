"""How much the benchmark runs: the ladder of user counts, step lengths, repeats, and the
kata steps chosen on the command line (``--steps 1,2,4`` or ``2-5``)."""

from __future__ import annotations

from dataclasses import dataclass

from kata import steps as kata

HALF_LOAD = "half-load"
"""The scenario label of the fixed-rate step: half the monolith's best throughput."""
HALF_LOAD_USERS = 32


@dataclass(frozen=True)
class Plan:
    """How much to run: the ladder, step length, repeats and the reference steps."""

    ladder: tuple[int, ...]
    seconds: int
    repeats: int
    warmup_seconds: int
    products: int
    reference_users: int = 64
    reference_seconds: int = 10
    reference_repeats: int = 2
    scaling: bool = True
    hot_replicas: str = "catalog=2"
    step_ladder: tuple[int, ...] | None = None
    """The ladder of each kata step (None: the same as ``ladder``)."""
    step_seconds: int | None = None
    """Length of each kata step's runs (None: ``seconds``)."""

    @property
    def kata_ladder(self) -> tuple[int, ...]:
        return self.step_ladder or self.ladder

    @property
    def kata_seconds(self) -> int:
        return self.step_seconds or self.seconds


FULL = Plan(
    ladder=(1, 2, 4, 8, 16, 32, 64), seconds=30, repeats=2, warmup_seconds=15, products=1000
)
QUICK = Plan(
    ladder=(2, 8, 32),
    seconds=8,
    repeats=1,
    warmup_seconds=3,
    products=200,
    reference_seconds=5,
    reference_repeats=1,
    scaling=False,
    step_ladder=(8,),
    step_seconds=6,
)


def parse_users(text: str) -> tuple[int, ...]:
    """``8,16,32`` as a ladder of user counts."""
    try:
        users = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"user counts are whole numbers, comma-separated: {text!r}") from None
    if not users or min(users) < 1:
        raise ValueError(f"user counts must be 1 or more: {text!r}")
    return users


def parse_steps(text: str) -> list[kata.Step]:
    """``1,2,4``, ``2-5`` or ``all`` as kata steps, in order, each once."""
    if text.strip() == "all":
        return list(kata.STEPS)
    numbers: set[int] = set()
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        first = kata.step(low).number
        last = kata.step(high).number if dash else first
        if last < first:
            raise ValueError(f"a range of steps goes up: {part.strip()!r}")
        numbers.update(range(first, last + 1))
    return [kata.STEPS[number] for number in sorted(numbers)]
