import numpy as np
import pytest

from livemind.errors import DataError
from livemind.world.datasets import load_kuailive, load_sequences, load_twitch, read_sequences


def test_twitch_exact_parse(tmp_path):
    f = tmp_path / "100k_a.csv"
    f.write_text("1,33842865744,mithrain,154,156\n1,33846768288,alptv,166,169\n2,33842865744,mithrain,150,158\n")
    w = load_twitch(f)
    assert w.rooms.to_pylist() == [
        {"id": 33842865744, "streamer": 1, "start_time": 150 * 600.0, "end_time": 158 * 600.0, "title": "mithrain"},
        {"id": 33846768288, "streamer": 0, "start_time": 166 * 600.0, "end_time": 169 * 600.0, "title": "alptv"},
    ]
    assert w.streamers.column("name").to_pylist() == ["alptv", "mithrain"]
    assert w.events.to_pylist() == [
        {"viewer": 1, "room": 33842865744, "time": 92400.0, "kind": "watch", "value": 1200.0},
        {"viewer": 1, "room": 33846768288, "time": 99600.0, "kind": "watch", "value": 1800.0},
        {"viewer": 2, "room": 33842865744, "time": 90000.0, "kind": "watch", "value": 4800.0},
    ]
    assert w.viewers.column("id").to_pylist() == [1, 2]


def test_twitch_bad_rows_name_file_line_and_value(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("1,5,a,10,12\n2,5,a,ten,12\n3,5,a,12,11\n4,5\n")
    with pytest.raises(DataError, match=r"t\.csv:2: column 'start' = 'ten' is not an integer"):
        load_twitch(f)
    w = load_twitch(f, skip_bad=True)
    assert w.meta["skipped_rows"] == 3
    assert w.events.num_rows == 1
    f.write_text("1,5,a,12,11\n")
    with pytest.raises(DataError, match=r"t\.csv:1: stop 11 is not after start 12"):
        load_twitch(f)
    f.write_text("1,5\n")
    with pytest.raises(DataError, match=r"t\.csv:1: expected at least 5 fields, got 2"):
        load_twitch(f)


def _kuailive(tmp_path, room_file="room.csv", sid="streamer_id"):
    d = tmp_path / "kuailive"
    d.mkdir()
    (d / room_file).write_text(
        f"p_date,live_id,{sid},live_type,start_timestamp,end_timestamp,live_content_category,live_name_id\n"
        "20250504,100,7,1,1746374400000,1746378000000,shop,0\n"
        "20250505,100,7,1,1746378000000,1746381600000,shop,0\n"
        "20250504,200,8,2,1746374400000,1746376200000,chat,3\n")
    (d / "click.csv").write_text(f"user_id,live_id,{sid},timestamp,watch_live_time\n"
                                 "1,100,7,1746374401000,2500\n2,200,8,1746374500000,60000\n")
    (d / "like.csv").write_text(f"user_id,live_id,{sid},timestamp\n1,100,7,1746374402000\n")
    (d / "comment.csv").write_text(f"user_id,live_id,{sid},timestamp\n2,200,8,1746374510000\n")
    (d / "gift.csv").write_text(f"user_id,live_id,{sid},timestamp,gift_price\n1,100,7,1746374403000,6\n")
    (d / f"{'streamer' if sid == 'streamer_id' else 'author'}.csv").write_text(
        f"{sid},gender,live_operation_tag\n7,M,Shopping\n8,F,Relationship\n")
    (d / "user.csv").write_text("user_id,age,gender\n1,18-23,M\n2,24-30,F\n3,31-40,F\n")
    return d


@pytest.mark.parametrize("room_file,sid", [("room.csv", "streamer_id"), ("mapped_room.csv", "author_id")])
def test_kuailive_exact_parse(tmp_path, room_file, sid):
    w = load_kuailive(_kuailive(tmp_path, room_file, sid))
    assert w.rooms.to_pylist() == [
        {"id": 100, "streamer": 7, "start_time": 1746374400.0, "end_time": 1746381600.0, "title": "shop"},
        {"id": 200, "streamer": 8, "start_time": 1746374400.0, "end_time": 1746376200.0, "title": "chat"},
    ]
    assert w.events.to_pylist() == [
        {"viewer": 1, "room": 100, "time": 1746374401.0, "kind": "click", "value": 0.0},
        {"viewer": 1, "room": 100, "time": 1746374401.0, "kind": "watch", "value": 2.5},
        {"viewer": 1, "room": 100, "time": 1746374402.0, "kind": "like", "value": 0.0},
        {"viewer": 1, "room": 100, "time": 1746374403.0, "kind": "gift", "value": 6.0},
        {"viewer": 2, "room": 200, "time": 1746374500.0, "kind": "click", "value": 0.0},
        {"viewer": 2, "room": 200, "time": 1746374500.0, "kind": "watch", "value": 60.0},
        {"viewer": 2, "room": 200, "time": 1746374510.0, "kind": "comment", "value": 0.0},
    ]
    assert w.streamers.to_pylist() == [
        {"id": 7, "name": "7", "category": "Shopping", "popularity": 1.0},
        {"id": 8, "name": "8", "category": "Relationship", "popularity": 1.0},
    ]
    assert w.viewers.column("id").to_pylist() == [1, 2, 3]


def test_kuailive_errors(tmp_path):
    d = _kuailive(tmp_path)
    (d / "gift.csv").write_text("user_id,live_id,streamer_id,timestamp,gift_price\n1,100,7,17463744x,6\n")
    with pytest.raises(DataError, match=r"gift\.csv:2: column 'timestamp' = '17463744x' is not an integer"):
        load_kuailive(d)
    assert load_kuailive(d, skip_bad=True).meta["skipped_rows"]["gift.csv"] == 1
    (d / "click.csv").write_text("user_id,live_id,timestamp\n1,100,1746374401000\n")
    with pytest.raises(DataError, match=r"click\.csv:1: header lacks column 'watch_live_time'"):
        load_kuailive(d)
    (d / "click.csv").write_text("user_id,live_id,timestamp,watch_live_time\n1,100,1746374401000,5\n"
                                 "2,200,1746376200000,5\n3,999,1746374401000,5\n")
    with pytest.raises(DataError, match=r"click\.csv:3: live_id 200 is not live at timestamp 1746376200000"):
        load_kuailive(d)
    w = load_kuailive(d, skip_bad=True)
    assert w.meta["skipped_rows"]["click.csv"] == 2  # room 200 had ended; room 999 is unknown
    assert w.events.column("room").to_pylist()[:2] == [100, 100]
    (d / "room.csv").unlink()
    with pytest.raises(DataError, match=r"none of \['room.csv', 'mapped_room.csv'\] found"):
        load_kuailive(d)


def test_sequences_exact_parse(tmp_path):
    f = tmp_path / "Video.txt"
    f.write_text("1 5\n1 3\n1 9\n2 3\n2 4\n")
    assert {u: s.tolist() for u, s in read_sequences(f).items()} == {1: [5, 3, 9], 2: [3, 4]}
    w = load_sequences(f)
    assert w.events.to_pylist() == [
        {"viewer": 1, "room": 5, "time": 0.0, "kind": "click", "value": 0.0},
        {"viewer": 1, "room": 3, "time": 1.0, "kind": "click", "value": 0.0},
        {"viewer": 1, "room": 9, "time": 2.0, "kind": "click", "value": 0.0},
        {"viewer": 2, "room": 3, "time": 0.0, "kind": "click", "value": 0.0},
        {"viewer": 2, "room": 4, "time": 1.0, "kind": "click", "value": 0.0},
    ]
    assert w.rooms.column("id").to_pylist() == [3, 4, 5, 9]
    assert np.all(w.rooms.column("end_time").to_numpy() == 3.0)
    f.write_text("1 5\n1 x\n0 2\n")
    with pytest.raises(DataError, match=r"Video\.txt:2: column 'item' = 'x' is not an integer"):
        read_sequences(f)
    assert load_sequences(f, skip_bad=True).meta["skipped_rows"] == 2


def test_games_file_parses_fully(shared_data):
    path = shared_data / "sasrec-games" / "Video.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    seqs = read_sequences(path)
    assert len(seqs) == 31013
    assert sum(len(s) for s in seqs.values()) == 287107
    assert max(int(s.max()) for s in seqs.values()) == 23715
