import numpy as np

from livemind.rec.data.feedback import Impressions, ViewerState, history_rows, topic_share
from livemind.rec.data.watch import WatchLog
from livemind.world.schema import EVENT_KINDS, EventBatch

W, F, IMP = EVENT_KINDS.index("watch"), EVENT_KINDS.index("follow"), EVENT_KINDS.index("impression")


def test_viewer_state_counts_strictly_before():
    # rooms 0 and 1 belong to streamers 1 and 0; viewer 0 watches room 0 at 10 and 20, follows at 15
    ev = EventBatch([0, 0, 0, 1, 0], [0, 0, 0, 1, 1], [10.0, 20.0, 15.0, 12.0, 5.0], [W, W, F, W, IMP], [60, 30, 0, 9, 0])
    st = ViewerState(ev, room_streamer=np.array([1, 0]), n_streamers=2)
    v, s = np.array([0, 0, 0, 0, 1, 1]), np.array([1, 1, 1, 0, 0, 1])
    assert st.watches(v, s, np.array([10.0, 20.0, 21.0, 99.0, 12.5, 99.0])).tolist() == [0, 1, 2, 0, 1, 0]
    assert st.follows(v, s, np.array([15.0, 15.5, 99.0, 99.0, 99.0, 99.0])).tolist() == [False, True, True, False, False, False]


def test_history_rows_by_hand():
    log = WatchLog(viewer=np.array([0, 0, 0, 2]), room=np.zeros(4, int), streamer=np.zeros(4, int),
                   time=np.array([1.0, 2.0, 3.0, 1.0]), watch=np.ones(4), sid=np.array([[1, 1], [2, 2], [3, 3], [4, 4]]),
                   first=np.array([0, 0, 0, 3]), tokenizer_version="v")
    rows, valid = history_rows(log, np.array([0, 0, 2, 1]), np.array([3.0, 9.0, 1.0, 5.0]), length=2)
    assert valid.tolist() == [[True, True], [True, True], [False, False], [False, False]]
    assert rows[valid].tolist() == [0, 1, 1, 2]  # before t=3: watches at 1, 2; t=9: 2, 3
    codes = log.sid[rows] * valid[..., None]  # what the reward model reads
    assert codes[:, :, 0].tolist() == [[1, 2], [2, 3], [0, 0], [0, 0]]


def test_topic_share_by_hand():
    log = WatchLog(viewer=np.array([0, 0, 0, 2]), room=np.zeros(4, int), streamer=np.zeros(4, int),
                   time=np.array([1.0, 2.0, 3.0, 1.0]), watch=np.ones(4), sid=np.zeros((4, 2), int),
                   first=np.array([0, 0, 0, 3]), tokenizer_version="v", topic=np.array([5, 7, 5, 7]))
    v, t = np.array([0, 0, 0, 0, 2, 1]), np.array([9.0, 9.0, 3.0, 9.0, 9.0, 9.0])
    topics = np.array([5, 7, 5, -1, 7, 5])
    share = topic_share(log.topic, *history_rows(log, v, t, 3), topics)
    # viewer 0 before 9: topics 5, 7, 5; before 3: 5, 7; viewer 2: 7; viewer 1 has no history
    assert share.tolist() == [2 / 3, 1 / 3, 1 / 2, 0.0, 1.0, 0.0]
    assert topic_share(log.topic, *history_rows(log, v, t, 1), topics).tolist() == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert topic_share(None, *history_rows(log, v, t, 3), np.zeros(6, int)).tolist() == [0.0] * 6  # topics unknown


def test_impressions_credit_every_event_once(tiny_world, tiny_rec):
    _, world = tiny_world
    imp = Impressions.from_world(world, tiny_rec.frame, tiny_rec.codes, "test-v1")
    ev = world.event_batch()
    n = {k: int((ev.kind == EVENT_KINDS.index(k)).sum()) for k in ("impression", "click", "like", "purchase")}
    assert len(imp) == n["impression"]  # every impression of the simulator has a segment on screen
    assert imp.labels["click"].sum() == n["click"]
    assert imp.labels["like"].sum() == n["like"] and imp.labels["purchase"].sum() == n["purchase"]
    assert imp.labels["watch"].sum() == ev.value[ev.kind == W].sum()
    assert np.all(imp.labels["like"] <= imp.labels["click"])  # engagement only after a click
    assert np.array_equal(imp.sid, tiny_rec.codes[tiny_rec.frame.lookup(imp.room, imp.time)])
    assert np.array_equal(imp.topic, tiny_rec.frame.topic_ids()[tiny_rec.frame.lookup(imp.room, imp.time)])
