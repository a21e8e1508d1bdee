"""The policy's wording helpers that pages, reports, the CLI and evidence packs share."""

from __future__ import annotations

from decimal import Decimal

import pytest

from consentry.policy import format_money


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (Decimal("70500"), "USD", "USD 70,500.00"),
        ("70500.00", "USD", "USD 70,500.00"),
        ("52500.5", "EUR", "EUR 52,500.50"),
        (Decimal("1234567.5"), "EUR", "EUR 1,234,567.50"),
        (0, "USD", "USD 0.00"),
        (15000, "USD", "USD 15,000.00"),
    ],
)
def test_money_is_the_code_then_the_amount_with_separators_and_cents(
    amount: Decimal | int | str, currency: str, text: str
) -> None:
    assert format_money(amount, currency) == text
