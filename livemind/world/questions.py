"""Viewer questions about the product on the card, with gold answers from the product facts.

The gold answer is computed from the same structured `Product` the segment text was written from,
so a question's gold facts are right by construction. LiveThinking's task generator builds richer
tasks (comparisons, unanswerable and adversarial comments) on top of these.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from livemind.world.schema import Product

QUESTION_KINDS: tuple[str, ...] = ("price", "bundle", "stock", "shipping", "returns", "material", "size", "spec")


def ask(product: Product, kind: str, rng: np.random.Generator) -> tuple[str, dict[str, Any]]:
    """(question text, gold facts) for one question of `kind` about `product`.

    >>> from livemind.world.catalog import make_product
    >>> p = make_product(np.random.default_rng(0), 7, 1, 0)
    >>> text, gold = ask(p, "stock", np.random.default_rng(0))
    >>> gold == {"stock": p.stock, "in_stock": p.stock > 0}
    True
    """
    name = product.name
    if kind == "price":
        q = product.quote(1)
        return f"how much is the {name} right now?", {"unit_price": q["unit_price"], "total": q["total"]}
    if kind == "bundle":
        qty = int(rng.integers(2, 5))
        q = product.quote(qty)
        return (
            f"if I buy {qty} of the {name}, what do I pay in total with the coupon and shipping?",
            {"qty": qty, "total": q["total"], "goods_total": q["goods_total"], "shipping": q["shipping"]},
        )
    if kind == "stock":
        return f"is the {name} still in stock?", {"stock": product.stock, "in_stock": product.stock > 0}
    if kind == "shipping":
        return (
            f"when does the {name} ship and is shipping free?",
            {"ship_days": product.ship_days, "ship_fee": product.ship_fee,
             "free_ship_threshold": product.free_ship_threshold},
        )
    if kind == "returns":
        return f"can I return the {name} if it doesn't suit me?", {"return_days": product.return_days,
                                                                  "returnable": product.return_days > 0}
    if kind == "material":
        return f"what is the {name} made of?", {"materials": list(product.materials)}
    if kind == "size":
        return f"which sizes does the {name} come in?", {"sizes": list(product.sizes)}
    if kind == "spec":
        spec = str(rng.choice(sorted(product.specs)))
        return f"what's the {spec} of the {name}?", {"spec": spec, "value": product.specs[spec]}
    raise ValueError(f"unknown question kind {kind!r}; expected one of {list(QUESTION_KINDS)}")
