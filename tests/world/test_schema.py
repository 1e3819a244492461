import numpy as np
import pytest

from livemind.errors import DataError
from livemind.world.catalog import make_product
from livemind.world.schema import (
    EVENT_KINDS,
    Event,
    EventBatch,
    EventKind,
    Product,
    records_to_table,
    table_to_records,
)


def test_event_kinds_have_stable_codes():
    assert EVENT_KINDS == ("impression", "click", "watch", "like", "comment", "share", "follow", "gift", "purchase")
    assert EventKind.GIFT.code == 7


def test_event_batch_round_trips_through_records_and_arrow():
    events = [Event(1, 10, 100.0, EventKind.CLICK), Event(2, 11, 50.0, EventKind.WATCH, 42.0)]
    batch = EventBatch.from_records(events)
    assert batch.records() == events
    back = EventBatch.from_arrow(batch.to_arrow())
    assert back.records() == events
    assert [e.time for e in batch.sorted_by_time().records()] == [50.0, 100.0]


def test_event_batch_rejects_unknown_kind_and_bad_time():
    table = EventBatch.from_records([Event(1, 1, 0.0, EventKind.LIKE)]).to_arrow()
    bad = table.set_column(3, "kind", [["dislike"]])
    with pytest.raises(DataError, match="event row 0: unknown event kind 'dislike'"):
        EventBatch.from_arrow(bad)
    with pytest.raises(DataError, match="time nan is not a finite"):
        EventBatch(np.array([1]), np.array([1]), np.array([np.nan]), np.array([0]), np.array([0.0]))


def test_product_records_round_trip_with_lists_and_dicts():
    products = [make_product(np.random.default_rng(i), i, 0, i % 8) for i in range(5)]
    table = records_to_table(products, Product)
    assert table.num_rows == 5
    assert table_to_records(table, Product) == products


def test_quote_applies_discount_bundle_coupon_shipping_in_order():
    p = Product(0, 0, "mug", "home", 20.0, 50.0, 25.0, 5.0, 3, 10.0, (), (), {}, 4, 2, 3.5, 30.0, 7)
    # 1 unit: 20 * 0.5 = 10, below coupon threshold 25, below free shipping 30 -> 10 + 3.5
    assert p.quote(1) == {"unit_price": 10.0, "subtotal": 10.0, "coupon": 0.0, "goods_total": 10.0,
                          "shipping": 3.5, "total": 13.5}
    # 3 units: 30, bundle -10% = 27, coupon -5 = 22, below 30 -> +3.5 = 25.5
    assert p.quote(3)["total"] == 25.5
    with pytest.raises(DataError, match="quantity must be at least 1, got 0"):
        p.quote(0)
