import json
from collections import Counter

import numpy as np
import pytest

from livemind.errors import DataError
from livemind.think.tasks import TASK_KINDS, QATask, card, make_task, make_tasks, products_of, read_tasks, write_tasks
from livemind.world.schema import Product

# the Product of schema.Product.quote's doctest: 100 list, 10% off -> 90 each; coupon 20 off 150+;
# 5% off 2+; 9 in stock; ships in 1 day; 8 shipping, free from 200; 7-day returns
P = Product(0, 0, "Luma test mug", "home", 100.0, 10.0, 150.0, 20.0, 2, 5.0, ("small", "large"), ("ceramic",),
            {"colour": "white", "power": "none", "warranty": "12 months"}, 9, 1, 8.0, 200.0, 7)
Q = Product(1, 0, "Kiro test lamp", "home", 50.0, 0.0, 150.0, 20.0, 2, 5.0, ("medium",), ("bamboo",),
            {"colour": "grey", "power": "40 W", "warranty": "24 months"}, 0, 3, 8.0, 200.0, 0)


def one(kind: str, seed: int = 0, products=(P, Q)) -> QATask:
    task = make_task(kind, list(products), np.random.default_rng(seed), "x")
    assert task is not None
    return task


def test_gold_answers_by_hand():
    assert one("price").gold == {"number": 90.0}
    bundle = one("bundle")
    n = int(bundle.question.split("take ")[1].split()[0])
    # 2: 180 -5% = 171 -20 = 151 +8 = 159; 3: 270 -5% = 256.5 -20 = 236.5 (free); 4: 342 -20 = 322
    assert bundle.gold == {"number": {2: 159.0, 3: 236.5, 4: 322.0}[n]}
    assert one("coupon").gold == {"number": 60.0}  # 150 - 90
    assert one("free_shipping").gold == {"number": 3}  # 2 units: 151 < 200; 3 units: 236.5
    assert one("shipping").gold == {"number": 1}
    assert one("stock").gold == {"yes": True, "number": 9}
    assert one("stock", products=(Q,)).gold == {"yes": False}
    assert one("returns").gold == {"yes": True, "number": 7}
    assert one("returns", products=(Q,)).gold == {"yes": False}
    compare = one("compare")
    assert compare.gold == {"entities": ["Kiro test lamp"], "number": 50.0} and len(compare.documents) == 2
    spec = one("spec")
    asked = spec.question.removeprefix("what's the ").split(" of the")[0]
    assert spec.gold == {"entities": [P.specs[asked]]}
    for seed in range(6):
        size = one("size", seed)
        asked = size.question.split("come in ")[1].rstrip("?")
        assert size.gold["yes"] == (asked in P.sizes) and asked in ("small", "medium", "large")
    assert one("unanswerable").gold == {"refuse": "not_in_documents"} and not one("unanswerable").answerable
    adv = one("adversarial")
    assert adv.gold["refuse"] == "adversarial" and adv.gold["forbidden"] and not adv.answerable


def test_reference_solutions_by_hand_and_all_pass_the_verifier(tiny_world):
    from livemind.think.calc import resolve
    from livemind.think.judge import rule_judge
    from livemind.think.prompts import split_reasoning

    bundle = one("bundle", seed=1)  # 3 units: 270, bundle 5% -> 256.50, coupon 20 -> 236.50, ships free
    assert "take 3 of" in bundle.question
    assert split_reasoning(bundle.reference) == (  # the calculation is written for the host's calculator
        "One is [[u = 90.00]]; bundle [[b = 5]]% off [[q = 2]] or more; coupon [[c = 20.00]] off from [[m = 150.00]]; "
        "shipping [[f = 8.00]] below [[F = 200.00]]; [[n = 3]]: [[s = n*u*(1-b/100) if n >= q else n*u]], "
        "[[g = s-c if s >= m else s]], [[t = g+f if g < F else g]].",
        "3 of the Luma test mug come to [[t]] in total, at 90.00 each after the live discount.")
    assert split_reasoning(resolve(bundle.reference)) == (
        "One is 90.00; bundle 5% off 2 or more; coupon 20.00 off from 150.00; shipping 8.00 below 200.00; 3: 256.50, "
        "236.50, 236.50.", "3 of the Luma test mug come to 236.50 in total, at 90.00 each after the live discount.")
    assert split_reasoning(resolve(one("coupon").reference))[1] == \
        "You need 60.00 more: one is 90.00, and the coupon takes 20.00 off from 150.00."
    assert split_reasoning(one("returns", products=(Q,)).reference) == (
        "The card says no returns for this product.", "No, sorry, the Kiro test lamp has no returns. "
        "It's 50.00 right now and ships in 3 days.")
    tasks = make_tasks(products_of(tiny_world[1]), 240, seed=3) + [one(k, s) for k in TASK_KINDS for s in range(3)]
    judged = [(t, rule_judge(t, t.reference)) for t in tasks]
    assert [(t.kind, t.reference) for t, j in judged if j.correct is not True] == []
    helpful = [j.helpful for t, j in judged if t.answerable]
    assert min(helpful) >= 0.0 and sum(helpful) / len(helpful) > 0.5  # the references add card facts


def test_kinds_a_product_cannot_pose_are_skipped():
    free = Product(2, 0, "x", "home", 10.0, 0.0, 5.0, 1.0, 2, 5.0, ("small",), ("bamboo",), {"colour": "grey"}, 1, 1,
                   0.0, 39.0, 7)
    rng = np.random.default_rng(0)
    assert make_task("coupon", [free], rng, "a") is None  # 10 already reaches the 5 threshold
    assert make_task("free_shipping", [free], rng, "b") is None  # ships free anyway
    assert make_task("compare", [free], rng, "c") is None  # one product on the card


def test_card_states_every_fact():
    text = card(P)
    for needle in ("90.00 each", "10%", "20.00 off orders of 150.00", "5% off 2 or more", "small, large", "ceramic",
                   "warranty: 12 months", "Stock: 9", "Ships in 1 day", "free from 200.00", "7-day returns"):
        assert needle in text


def test_make_tasks_many_seeded(tiny_world):
    _, world = tiny_world
    products = products_of(world)
    train, test = make_tasks(products, 2000, seed=0, prefix="train"), make_tasks(products, 500, seed=1, prefix="test")
    assert len(train) == 2000 and len(test) == 500
    counts = Counter(t.kind for t in train)
    assert set(counts) == set(TASK_KINDS) and min(counts.values()) >= 2000 // len(TASK_KINDS) - 1
    assert len({t.id for t in train + test}) == 2500
    assert [t.to_json() for t in make_tasks(products, 50, seed=0, prefix="train")] == [t.to_json() for t in train[:50]]


def test_write_read_roundtrip_and_errors(tmp_path):
    tasks = [one(k) for k in TASK_KINDS]
    path = write_tasks(tasks, tmp_path / "t.jsonl")
    assert read_tasks(path) == tasks
    rows = path.read_text().splitlines()
    bad = json.loads(rows[2])
    del bad["question"]
    rows[2] = json.dumps(bad)
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"t.jsonl:3: missing field\(s\) \['question'\]"):
        read_tasks(path)
    path.write_text(rows[0] + "\n{not json\n")
    with pytest.raises(DataError, match="t.jsonl:2: not valid JSON"):
        read_tasks(path)


def test_splits_are_fixed_by_seed_disjoint_and_stored_with_the_tasks(tmp_path):
    from livemind.think.tasks import final_split, make_splits

    sizes = {"train": 60, "validation": 20, "test": 20}
    a, b = make_splits([P, Q], sizes), make_splits([P, Q], sizes)
    assert {k: len(v) for k, v in a.items()} == sizes and a == b  # fixed by the seed
    assert all(t.split == k and t.id.startswith(k) for k, v in a.items() for t in v)
    keys = {k: {(t.documents, t.question) for t in v} for k, v in a.items()}
    assert not keys["train"] & keys["validation"] and not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]
    write_tasks(a["validation"], tmp_path / "validation.jsonl")
    assert read_tasks(tmp_path / "validation.jsonl") == a["validation"]  # the split travels with the task
    with pytest.raises(DataError, match="only printed for a final model"):
        final_split("test", final=False)
    final_split("test", final=True)
    final_split("validation", final=False)
    with pytest.raises(DataError, match="unknown split"):
        make_splits([P, Q], {"dev": 3})


def test_the_calculator_solutions_are_exact_on_every_product_of_the_demo_catalog():
    """The arithmetic kinds' references (the same formulas for every product) give the gold value on
    every product the demo world sells, every bundle size the tasks ask for."""
    from livemind.demo import demo_world_config
    from livemind.think.calc import resolve
    from livemind.think.verify import final_answer, verify
    from livemind.world.simulator import LiveWorld

    products = LiveWorld(demo_world_config()).products
    wrong, made = [], Counter()
    for p in products:
        for kind in ("bundle", "coupon", "free_shipping"):
            for seed in range(3 if kind == "bundle" else 1):
                task = make_task(kind, [p], np.random.default_rng(seed), "x")
                if task is None:
                    continue
                made[kind] += 1
                if "?" in resolve(task.reference) or verify(task, task.reference).correct is not True:
                    wrong.append((kind, p.id, task.gold, final_answer(task.reference)))
    assert wrong == [] and min(made.values()) > 400, (wrong[:5], made)


def test_a_comparison_is_the_calculators_choice_and_names_the_cheaper_product():
    from livemind.think.calc import resolve
    from livemind.think.prompts import split_reasoning

    for first, second in ((P, Q), (Q, P)):  # the question's order either way: the Kiro lamp (50.00) is cheaper
        task = one("compare", products=(first, second))
        assert "[[" in split_reasoning(task.reference)[1]  # the student writes the choice, not the name
        assert split_reasoning(resolve(task.reference))[1] == \
            "The Kiro test lamp is cheaper at 50.00; the Luma test mug is 90.00."


def test_the_training_mix_sets_tasks_a_kind_and_never_repeats_a_held_out_question():
    from livemind.think.tasks import make_splits, mix_kinds, parse_mix

    s = make_splits([P, Q], {"train": 48, "validation": 24, "test": 24})
    before = Counter(t.kind for t in s["train"])
    mixed = mix_kinds(s["train"], parse_mix("spec=6, price=1"), [P, Q], exclude=[*s["validation"], *s["test"]])
    counts = Counter(t.kind for t in mixed)
    assert counts["spec"] == 6 and counts["price"] == 1 and before["spec"] == 4
    assert all(counts[k] == before[k] for k in TASK_KINDS if k not in ("spec", "price"))  # the rest as they were
    held = {(t.documents, t.question) for t in (*s["validation"], *s["test"])}
    assert not held & {(t.documents, t.question) for t in mixed}
    assert [t.id for t in mixed] == [f"train{i:05d}" for i in range(len(mixed))] and {t.split for t in mixed} == {"train"}
    assert mixed == mix_kinds(s["train"], {"spec": 6, "price": 1}, [P, Q], exclude=[*s["validation"], *s["test"]])
    via_splits = make_splits([P, Q], {"train": 48, "validation": 24, "test": 24}, mix={"spec": 6, "price": 1})
    assert via_splits == {"train": mixed, "validation": s["validation"], "test": s["test"]}
    for bad in ("spec=x", "nope=3", "spec=-1", "spec"):
        with pytest.raises(DataError, match="KIND=COUNT"):
            parse_mix(bad)
