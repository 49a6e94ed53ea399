"""Orders' API schemas."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints, WithJsonSchema

from shop.kernel.types import InputModel, Money, Name, OutputModel, ShortText
from shop.orders.models import OrderStatus

# ISO 3166-1 alpha-2, the officially assigned codes.
COUNTRY_CODES = frozenset(
    """
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ
BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR
CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR
GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU
ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ
LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ
MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF
PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI
SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR
TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
""".split()  # noqa: SIM905 (a table reads better as text)
)


def _country(code: str) -> str:
    if code not in COUNTRY_CODES:
        raise ValueError(f"{code!r} is not an ISO 3166-1 alpha-2 country code")
    return code


# Any 12-19 digits: like a real processor, the fake one decides what it accepts.
CardNumber = Annotated[str, StringConstraints(pattern=r"^[0-9]{12,19}$")]


class ShippingAddress(InputModel):
    name: Name
    line1: ShortText
    line2: ShortText | None = None
    city: Name
    postal_code: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9 -]{1,11}$")]
    country: Annotated[
        str,
        AfterValidator(_country),
        WithJsonSchema({"type": "string", "enum": sorted(COUNTRY_CODES)}),
        Field(description="ISO 3166-1 alpha-2"),
    ]


class OrderCreate(InputModel):
    card_number: CardNumber = Field(description="Never stored; only its last 4 digits are")
    shipping_address: ShippingAddress


class OrderItemRead(OutputModel):
    product_id: int
    name: str
    unit_price: Money
    quantity: int
    line_total: Money


class OrderRead(OutputModel):
    id: uuid.UUID
    status: OrderStatus
    items: list[OrderItemRead]
    total: Money
    shipping_address: ShippingAddress
    card_last4: str
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime
