"""The host's stop rules: a sentence said again ends the answer, offline and streamed alike."""

import queue

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livemind.serve.host.decoder import _END, DecodeRequest
from livemind.serve.host.serving import Generation
from livemind.think.backends import Completion, at_stop
from livemind.think.prompts import STOP, repeat_cut, repeat_pending

SENTENCES = ["The answer is 1.5.", "It ships in 3 days.", "Yes.", "It is 9.00 right now!", "Viewer: free?",
             "The answer is 1.55.", "The answer", "Is it?", "[[t = 2*9.50]] in all."]


@pytest.mark.parametrize("text, cut", [
    ("The answer is 1.5. The answer is 1.5. The answer is 1.5.", 19),
    ("The answer is 1.5. The answer is 1.55. The answer is 1.5.", 39),  # not the look-alike, the same one
    ("<think>One is 9.00 today.</think> One is 9.00 today.", None),  # the answer may restate the reasoning
    ("<think>One is 9.00 today. One is 9.00 today.</think> It is 9.00.", 26),  # a loop in the reasoning
    ("Yes. Yes. Yes. Yes.", None),  # shorter than MIN_REPEAT_CHARS
    ("It ships in 3 days.\nIt ships in 3 days.", 20),  # the text ended: its last sentence counts
    ("It ships in 3 days. It ships in 3 days", None),  # not the same sentence
])
def test_a_sentence_said_again_is_where_the_host_stops(text, cut):
    assert repeat_cut(text) == cut
    if cut is not None:
        assert at_stop(Completion(text, 40), (), lambda t: len(t.split()), True).text == text[:cut]
    assert at_stop(Completion(text, 40), ()).text == text  # only the host's sampling asks for it


def test_an_unfinished_sentence_that_may_be_a_repeat_is_held_back():
    assert repeat_cut("The answer is 1.5. The answer is 1.5", complete=False) is None  # "1.5" may become "1.55"
    assert repeat_pending("The answer is 1.5. The answer is 1.5") == len("The answer is 1.5")
    assert repeat_pending("The answer is 1.5. The price") == 0
    assert repeat_pending("<think>The answer is 1.5.</think> The answer") == 0  # another part


def _served(pieces: list[str]) -> tuple[str, str, str | None]:
    """What DecodeRequest streams for text arriving in `pieces` (as the remote decoder feeds it)."""
    gen = Generation()
    req = DecodeRequest(None, [], 10_000, 0.0, 1.0, None, STOP, gen, repeats=True)
    for p in pieces:
        if req.take(gen.text + p):
            break
    else:
        req.finish()
    out = []
    while (item := req.pieces.get_nowait()) is not _END:
        out.append(item)
    with pytest.raises(queue.Empty):
        req.pieces.get_nowait()
    return "".join(out), gen.text, gen.finish_reason


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(SENTENCES), max_size=8), st.lists(st.sampled_from([" ", "\n", " \n"]), min_size=8, max_size=8),
       st.lists(st.integers(1, 7), min_size=1, max_size=60))
def test_streamed_pieces_cut_where_the_offline_evaluation_cuts(sentences, gaps, sizes):
    text = "".join(s + g for s, g in zip(sentences, gaps)).rstrip(" ")
    pieces, i, k = [], 0, 0
    while i < len(text):
        n = sizes[k % len(sizes)]
        pieces.append(text[i:i + n])
        i, k = i + n, k + 1
    streamed, final, _ = _served(pieces)
    offline = at_stop(Completion(text, 0), STOP, None, True).text
    assert streamed == final == offline
    assert repeat_cut(streamed) is None  # nothing said twice reached the viewer
