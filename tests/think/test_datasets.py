import json

import pytest

from livemind.errors import DataError
from livemind.think.datasets import load_musique, load_product_qa
from livemind.think.verify import verify


def test_musique_rows_become_tasks(tmp_path):
    row = {"id": "2hop__1", "paragraphs": [{"idx": 0, "title": "Stanley", "paragraph_text": "Stanley is a city.",
                                            "is_supporting": True},
                                           {"idx": 1, "title": "Other", "paragraph_text": "Unrelated.", "is_supporting": False}],
           "question": "What is the seat of Mountrail County?", "answer": "Stanley", "answer_aliases": ["Stanley, ND"],
           "answerable": True}
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps({k: v for k, v in row.items() if k != "answer"}) + "\n")
    with pytest.raises(DataError, match=r"m.jsonl:2: missing field\(s\) \['answer'\]"):
        load_musique(path)
    (task,) = load_musique(path, limit=1)
    assert task.documents == ("Stanley: Stanley is a city.", "Other: Unrelated.")
    assert task.gold == {"answers": ["Stanley", "Stanley, ND"]}
    assert verify(task, "<think>the county seat</think>Stanley").correct is True
    assert verify(task, "Bismarck").correct is False
    from livemind.think.prompts import SHORT_ANSWER_SYSTEM, messages

    m = messages(task)  # a short-answer prompt: EM/F1 score a phrase, not a host's sentence
    assert m[0]["content"].startswith(SHORT_ANSWER_SYSTEM + "\n\nDocuments:\n[1] Stanley: Stanley is a city.")
    assert m[-1] == {"role": "user", "content": "What is the seat of Mountrail County?"}
    (gold_only,) = load_musique(path, limit=1, paragraphs="supporting")
    assert gold_only.documents == ("Stanley: Stanley is a city.",)
    with pytest.raises(DataError, match="paragraphs must be 'all' or 'supporting', got 'gold'"):
        load_musique(path, paragraphs="gold")


def test_product_qa_rows_become_tasks(tmp_path):
    path = tmp_path / "dev.csv"
    path.write_text("ASIN\tquestion\tcandidate\tanswer\tsource\n"
                    "B1\tdoes it fit a 10 inch pan?\tfits pans up to 12 inches\tyes, up to 12 inches.\tCQA\n"
                    "B2\tis it loud?\t\tnot very.\tCQA\n")
    with pytest.raises(DataError, match=r"dev.csv:3: empty field\(s\) \['candidate'\]"):
        load_product_qa(path)
    (task,) = load_product_qa(path, limit=1)
    assert (task.id, task.documents, task.gold) == ("B1-2", ("fits pans up to 12 inches",), {"answers": ["yes, up to 12 inches."]})
    path.write_text("a\tb\n1\t2\n")
    with pytest.raises(DataError, match="lacks some of"):
        load_product_qa(path)
