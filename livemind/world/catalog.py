"""Product categories and a seeded product generator.

Each category knows its product nouns, materials, size scheme and spec fields, so that generated
products read like a live-shopping card and every fact a viewer may ask about is structured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from livemind.world.schema import Product


@dataclass(frozen=True)
class Category:
    name: str
    nouns: tuple[str, ...]
    adjectives: tuple[str, ...]
    materials: tuple[str, ...]
    sizes: tuple[str, ...]  # the size options a product of this category may offer
    specs: tuple[tuple[str, tuple[str, ...]], ...]  # spec name -> possible values
    price_range: tuple[float, float]


CATEGORIES: tuple[Category, ...] = (
    Category("beauty", ("lipstick", "serum", "foundation", "eye palette", "sunscreen", "face mask"),
             ("matte", "hydrating", "long-wear", "glow", "travel"),
             ("shea butter", "hyaluronic acid", "vitamin E", "niacinamide", "squalane"),
             ("15 ml", "30 ml", "50 ml"),
             (("skin type", ("dry", "oily", "all", "sensitive")), ("spf", ("none", "15", "30", "50")),
              ("shelf life", ("12 months", "24 months", "36 months"))), (9.0, 89.0)),
    Category("fashion", ("down jacket", "linen shirt", "denim jeans", "wool sweater", "silk dress", "hoodie"),
             ("oversized", "slim-fit", "classic", "cropped", "relaxed"),
             ("cotton", "linen", "merino wool", "mulberry silk", "recycled polyester"),
             ("S", "M", "L", "XL", "XXL"),
             (("fit", ("true to size", "runs small", "runs large")), ("care", ("machine wash cold", "hand wash", "dry clean")),
              ("season", ("spring", "summer", "autumn", "winter"))), (19.0, 259.0)),
    Category("electronics", ("wireless earbuds", "power bank", "smartwatch", "tablet", "bluetooth speaker", "phone"),
             ("pro", "mini", "ultra", "lite", "max"),
             ("aluminium", "polycarbonate", "tempered glass", "silicone"),
             ("64 GB", "128 GB", "256 GB"),
             (("battery", ("2000 mAh", "5000 mAh", "10000 mAh", "20000 mAh")), ("warranty", ("6 months", "12 months", "24 months")),
              ("weight", ("45 g", "180 g", "320 g", "480 g"))), (29.0, 899.0)),
    Category("food", ("green tea", "dark chocolate", "mixed nuts", "instant noodles", "honey", "coffee beans"),
             ("organic", "spicy", "low-sugar", "premium", "family-size"),
             ("glass jar", "vacuum pack", "tin", "paper box"),
             ("250 g", "500 g", "1 kg"),
             (("origin", ("Yunnan", "Sicily", "Colombia", "New Zealand")), ("best before", ("6 months", "12 months", "18 months")),
              ("allergens", ("none", "nuts", "gluten", "soy"))), (5.0, 59.0)),
    Category("home", ("air fryer", "duvet", "storage box", "desk lamp", "ceramic mug set", "vacuum cleaner"),
             ("compact", "smart", "nordic", "foldable", "quiet"),
             ("stainless steel", "ceramic", "bamboo", "cotton", "ABS plastic"),
             ("small", "medium", "large"),
             (("power", ("none", "40 W", "1200 W", "1500 W")), ("warranty", ("12 months", "24 months", "36 months")),
              ("colour", ("white", "grey", "sage green", "black"))), (12.0, 399.0)),
    Category("sports", ("yoga mat", "running shoes", "dumbbell set", "cycling jersey", "jump rope", "tennis racket"),
             ("non-slip", "lightweight", "adjustable", "breathable", "carbon"),
             ("TPE foam", "mesh", "cast iron", "carbon fibre", "neoprene"),
             ("36", "38", "40", "42", "44"),
             (("weight", ("0.3 kg", "1 kg", "5 kg", "10 kg")), ("level", ("beginner", "intermediate", "pro")),
              ("warranty", ("6 months", "12 months"))), (9.0, 299.0)),
    Category("toys", ("building blocks", "plush bear", "puzzle", "rc car", "board game", "doll house"),
             ("educational", "giant", "glow-in-the-dark", "classic", "collector"),
             ("ABS plastic", "wood", "plush fabric", "cardboard"),
             ("3+ years", "6+ years", "12+ years"),
             (("pieces", ("24", "100", "500", "1000")), ("batteries", ("none", "2 x AA", "USB rechargeable")),
              ("players", ("1", "2-4", "2-6"))), (7.0, 149.0)),
    Category("jewelry", ("necklace", "ring", "bracelet", "earrings", "pendant", "watch"),
             ("minimal", "vintage", "layered", "engraved", "charm"),
             ("sterling silver", "18k gold plating", "freshwater pearl", "titanium", "rose gold"),
             ("16 cm", "18 cm", "45 cm", "size 6", "size 7"),
             (("stone", ("none", "cubic zirconia", "pearl", "moissanite")), ("hypoallergenic", ("yes", "no")),
              ("gift box", ("included", "not included"))), (15.0, 499.0)),
)
CATEGORY_NAMES: tuple[str, ...] = tuple(c.name for c in CATEGORIES)
BRANDS: tuple[str, ...] = ("Luma", "Kiro", "Nova", "Sola", "Vanta", "Mori", "Aster", "Pico", "Rivo", "Zen")


def make_product(rng: np.random.Generator, product_id: int, streamer: int, category: int) -> Product:
    """One product of `CATEGORIES[category]` with random but consistent facts."""
    cat = CATEGORIES[category]
    lo, hi = cat.price_range
    price = float(np.round(np.exp(rng.uniform(np.log(lo), np.log(hi))), 0) - 0.01)
    n_sizes = int(rng.integers(1, len(cat.sizes) + 1))
    start = int(rng.integers(0, len(cat.sizes) - n_sizes + 1))
    n_mat = int(rng.integers(1, 3))
    materials = tuple(str(m) for m in rng.choice(cat.materials, size=n_mat, replace=False))
    specs = {name: str(rng.choice(values)) for name, values in cat.specs}
    threshold = float(np.ceil(price * rng.choice([1.0, 1.5, 2.0, 3.0]) / 10) * 10)
    return Product(
        id=product_id,
        streamer=streamer,
        name=f"{rng.choice(BRANDS)} {rng.choice(cat.adjectives)} {rng.choice(cat.nouns)}",
        category=cat.name,
        price=price,
        discount_pct=float(rng.choice([0, 5, 10, 15, 20, 30])),
        coupon_threshold=threshold,
        coupon_amount=float(max(1.0, np.round(threshold * rng.choice([0.05, 0.1, 0.15]), 0))),
        bundle_qty=int(rng.choice([2, 3])),
        bundle_pct=float(rng.choice([5, 10, 15])),
        sizes=tuple(cat.sizes[start : start + n_sizes]),
        materials=materials,
        specs=specs,
        stock=int(rng.choice([0, 3, 12, 48, 150, 500], p=[0.08, 0.12, 0.2, 0.25, 0.2, 0.15])),
        ship_days=int(rng.integers(1, 6)),
        ship_fee=float(rng.choice([0.0, 4.99, 6.99, 9.99])),
        free_ship_threshold=float(rng.choice([39.0, 59.0, 99.0])),
        return_days=int(rng.choice([0, 7, 15, 30], p=[0.1, 0.4, 0.25, 0.25])),
    )
