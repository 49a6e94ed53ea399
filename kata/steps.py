"""The steps of the kata, in order: what each extracts and which topology runs it.

Step 0 is the modular monolith alone; step 1 puts the gateway in front of it (the strangler
facade); steps 2-6 extract one context (or two, at the end) each, until the monolith serves
nothing and is retired; step 7 extracts none (its data move builds the read models its
topology reads: kata/data.py). Every step is a topology file: which contexts the monolith
still serves, which services exist, and where the gateway sends each path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONTEXTS = ("identity", "catalog", "inventory", "cart", "orders", "payments")
MONOLITH = "monolith"
"""The name of the monolith's service in every step's topology."""
DATA_NAME = "kata"
"""Every step runs on the same data folder (var/kata/) or PostgreSQL database names
(shopkata_kata_<service>), so the monolith's rows are still there when a context moves out."""


@dataclass(frozen=True)
class Step:
    number: int
    slug: str
    title: str
    topology: Path
    extracts: tuple[str, ...] = ()
    """The contexts that leave the monolith at this step (their data moves with them)."""

    @property
    def branch(self) -> str:
        """The learner's git branch of this step: ``kata/02-catalog``."""
        return f"kata/{self.number:02d}-{self.slug}"

    @property
    def page(self) -> Path:
        """This step's page in the guide."""
        return Path("docs/kata") / f"{self.number:02d}-{self.slug}.md"

    @property
    def service_contexts(self) -> dict[str, tuple[str, ...]]:
        """Every context extracted up to and including this step, by the service it went to."""
        return {
            context: (context,) for step in STEPS[: self.number + 1] for context in step.extracts
        }


STEPS: tuple[Step, ...] = (
    Step(0, "monolith", "The modular monolith", Path("topologies/kata-00-monolith.toml")),
    Step(1, "gateway", "The gateway in front", Path("topologies/gateway-monolith.toml")),
    Step(2, "catalog", "Extract catalog", Path("topologies/kata-02-catalog.toml"), ("catalog",)),
    Step(
        3, "identity", "Extract identity", Path("topologies/kata-03-identity.toml"), ("identity",)
    ),
    Step(
        4,
        "inventory",
        "Extract inventory",
        Path("topologies/kata-04-inventory.toml"),
        ("inventory",),
    ),
    Step(
        5, "payments", "Extract payments", Path("topologies/kata-05-payments.toml"), ("payments",)
    ),
    Step(
        6,
        "services",
        "Extract orders and cart: the saga, and the monolith retired",
        Path("topologies/kata-06-services.toml"),
        ("orders", "cart"),
    ),
    Step(
        7,
        "events",
        "From calls to events: read models fed through the broker",
        Path("topologies/services.toml"),
    ),
)
LAST = STEPS[-1].number


def step(number: int | str) -> Step:
    """The step numbered ``number`` (0..LAST); a clear error otherwise."""
    try:
        index = int(number)
    except (TypeError, ValueError):
        index = -1
    if not 0 <= index <= LAST:
        raise ValueError(f"STEP must be a number from 0 to {LAST}, got {number!r}")
    return STEPS[index]


def monolith_contexts(number: int) -> tuple[str, ...]:
    """The contexts the monolith still serves at step ``number``."""
    gone = {context for s in STEPS[: number + 1] for context in s.extracts}
    return tuple(context for context in CONTEXTS if context not in gone)
