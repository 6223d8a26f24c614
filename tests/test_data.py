import json

import numpy as np
import pytest

from photocritic.cli import main
from photocritic.data import ava
from photocritic.data.ava import LabelFormatError
from photocritic.data.comments import read_comments
from photocritic.data.datasets import check_images, load_dataset, random_split, summary

from conftest import SHARED

AVA = SHARED / "data" / "ava"
COMMENTS = SHARED / "data" / "comments"


@pytest.fixture(scope="module")
def shared_ava():
    if not AVA.is_dir():
        pytest.skip(f"{AVA} not found: the project's shared data is not beside this checkout")
    return AVA


@pytest.fixture(scope="module")
def all_votes(shared_ava):
    return ava.merge(ava.read_ava_txt(shared_ava / "AVA_head.txt"),
                     ava.read_ava_csv(shared_ava / "labels" / "tanet_test.csv"),
                     ava.read_ava_csv(shared_ava / "labels" / "tanet_val.csv"),
                     ava.read_ava_json(shared_ava / "labels" / "idealo_ava_labels_test.json"))


def test_three_label_files_give_49608_ids_that_agree(shared_ava):
    tables = [ava.read_ava_txt(shared_ava / "AVA_head.txt"),
              ava.read_ava_csv(shared_ava / "labels" / "tanet_test.csv"),
              ava.read_ava_csv(shared_ava / "labels" / "tanet_val.csv"),
              ava.read_ava_json(shared_ava / "labels" / "idealo_ava_labels_test.json")]
    merged = ava.merge(*tables)
    assert len(merged) == 49608
    # where an id is in more than one file, its histograms agree (checked directly too)
    overlaps = 0
    for a in range(len(tables)):
        for b in range(a + 1, len(tables)):
            common = set(tables[a].ids) & set(tables[b].ids)
            overlaps += len(common)
            for k in common:
                np.testing.assert_array_equal(tables[a].votes[tables[a].index[k]],
                                              tables[b].votes[tables[b].index[k]])
    assert overlaps > 0
    # the folder spec reads the same files
    assert len(load_dataset(shared_ava)) == 49608


def test_merge_refuses_disagreeing_histograms():
    a = ava.VoteTable(["1", "2"], [[1] * 10, [2] * 10])
    b = ava.VoteTable(["2"], [[3] * 10])
    with pytest.raises(LabelFormatError, match="different vote histograms"):
        ava.merge(a, b)


def test_comments_join_and_test_list(shared_ava, all_votes):
    dpc = read_comments(COMMENTS / "dpc_impression_and_subject.json")
    assert len(dpc) == 13432
    assert sum(k in all_votes.index for k in dpc) == 2038
    test_ids = ava.read_id_list(shared_ava / "aesthetics_image_lists" / "generic_test.jpgl")
    assert sum(k in all_votes.index for k in test_ids) == 3795
    sub, missing = all_votes.subset(test_ids)
    assert len(sub) == 3795 and len(missing) == len(test_ids) - 3795


def test_summary_of_ava_head(shared_ava, capsys):
    assert main(["data", "summary", str(shared_ava / "AVA_head.txt")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 1212 and out["label_kind"] == "distribution"
    t = ava.read_ava_txt(shared_ava / "AVA_head.txt")
    assert out["mean_score"]["mean"] == pytest.approx(float(t.mean.mean()), abs=1e-4)
    listed = sum(1 for line in open(shared_ava / "aesthetics_image_lists" / "generic_test.jpgl") if line.strip())
    assert out["splits"]["generic_test"]["listed"] == listed == 20000


def test_summary_with_comments(shared_ava):
    ds = load_dataset(shared_ava, comments=COMMENTS / "dpc_impression_and_subject.json")
    s = summary(ds)
    assert s["comments"]["joined_to_labels"] == 2038 and s["images"] == 49608


def test_style_lists(shared_ava):
    st = ava.read_style_lists(shared_ava / "style_image_lists")
    assert len(st.names) == 14 and st.names[0] == "Complementary_Colors"
    assert len(st.train_ids) == 11270 and set(st.train_labels) <= set(range(1, 15))
    assert st.test_labels.shape == (2809, 14) and set(np.unique(st.test_labels)) == {0, 1}
    assert len(ava.read_id_names(shared_ava / "tags.txt")) == 66


def test_formats_and_statistics_hand_computed(tmp_path):
    votes = [0, 0, 0, 0, 2, 2, 0, 0, 0, 0]  # half 5s, half 6s
    (tmp_path / "AVA.txt").write_text("1 77 " + " ".join(map(str, votes)) + " 3 0 1396\n"
                                      "2 78 1 0 0 0 0 0 0 0 1 0 0 0 5\n")  # one 1, one 9
    (tmp_path / "ava.csv").write_text("image_id,score2,score3,score4,score5,score6,score7,score8,"
                                      "score9,score10,score11,tag1,tag2,tag3\n77,"
                                      + ",".join(map(str, votes)) + ",3,0,1396\n")
    (tmp_path / "ava.json").write_text(json.dumps([{"image_id": "77", "label": votes}]))
    t = ava.read_ava_txt(tmp_path / "AVA.txt")
    c = ava.read_ava_csv(tmp_path / "ava.csv")
    j = ava.read_ava_json(tmp_path / "ava.json")
    for tab in (t, c, j):
        i = tab.index["77"]
        assert tab.mean[i] == pytest.approx(5.5) and tab.std[i] == pytest.approx(0.5)
        np.testing.assert_allclose(tab.distribution[i][4:6], [0.5, 0.5])
    assert t.mean[t.index["78"]] == pytest.approx(5.0)
    assert t.std[t.index["78"]] == pytest.approx(4.0)
    assert t.binary.tolist() == [1, 0]  # 5.5 > 5, but 5.0 is not


def test_bad_files_get_clear_errors(tmp_path):
    (tmp_path / "bad.txt").write_text("1 2 3\n")
    with pytest.raises(LabelFormatError, match=r"bad.txt:1: expected 15 columns"):
        ava.read_ava_txt(tmp_path / "bad.txt")
    (tmp_path / "bad.csv").write_text("image_id,quality\n1,5\n")
    with pytest.raises(LabelFormatError, match="no label column"):
        load_dataset(tmp_path / "bad.csv")
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "nothing-here")
    assert main(["data", "summary", str(tmp_path / "bad.txt")]) == 2


def test_comment_formats_agree(tmp_path):
    folder = tmp_path / "txt"
    folder.mkdir()
    (folder / "11.txt").write_text("nice light\n\ntoo dark\n")
    (folder / "12.txt").write_text("great\n")
    (tmp_path / "dpc.json").write_text(json.dumps({"11.jpg": ["nice light", "too dark"], "12.jpg": ["great"]}))
    (tmp_path / "karpathy.json").write_text(json.dumps({"images": [
        {"filename": "11.jpg", "sentences": ["nice light", {"raw": "too dark"}]},
        {"filename": "12.jpg", "sentences": [{"tokens": ["great"]}]}]}))
    (tmp_path / "c.jsonl").write_text('{"image_id": "11", "comment": "nice light"}\n'
                                      '{"image_id": "11", "comment": "too dark"}\n'
                                      '{"filename": "12.jpg", "comments": ["great"]}\n')
    want = {"11": ["nice light", "too dark"], "12": ["great"]}
    for src in (folder, tmp_path / "dpc.json", tmp_path / "karpathy.json", tmp_path / "c.jsonl"):
        assert read_comments(src) == want, src


def test_foodiac_karpathy_file():
    if not COMMENTS.is_dir():
        pytest.skip("shared data absent")
    food = read_comments(COMMENTS / "foodiac_composition.json")
    assert len(food) > 100 and all(isinstance(c, str) for v in food.values() for c in v)


def test_generic_sets_and_splits(tmp_path):
    rows = [{"path": f"img{i}.jpg", "mos": 20 + i, "split": "test" if i % 4 == 0 else "train"}
            for i in range(20)]
    with open(tmp_path / "labels.jsonl", "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    ds = load_dataset(tmp_path)
    assert ds.kind == "mos" and len(ds) == 20 and not ds.on_1_to_10
    test, info = ds.split("test")
    assert len(test) == 5 and info["how"] == "split column = test"
    (tmp_path / "mine.txt").write_text("img3.jpg\nimg4\nnot_there\n")
    sub, info = ds.split(str(tmp_path / "mine.txt"))
    assert sub.ids == ["img3", "img4"] and info["without_labels"] == 1
    d = check_images(ds)
    assert d["missing"] == 20 and d["missing_examples"][0].endswith("img0.jpg")
    (tmp_path / "img0.jpg").write_bytes(b"x")
    assert check_images(ds)["missing"] == 19
    csv_path = tmp_path / "dist.csv"
    csv_path.write_text("image,score1,score2,score3,score4,score5,score6,score7,score8,score9,score10\n"
                        "a.jpg,0,0,0,0,1,1,0,0,0,0\nb.jpg,0,0,0,0,0,0,0,0,0,4\n")
    dd = load_dataset(csv_path)
    assert dd.kind == "distribution" and dd.mean.tolist() == pytest.approx([5.5, 10.0])
    (tmp_path / "mean.csv").write_text("id,mean\nx,3.5\ny,7\n")
    assert load_dataset(tmp_path / "mean.csv").mean.tolist() == [3.5, 7.0]


def test_random_split_is_seeded_disjoint_and_complete():
    ids = [str(i) for i in range(1000)]
    a, b, c = random_split(ids, 0), random_split(ids, 0), random_split(ids, 1)
    assert a == b and a != c
    assert [len(a[k]) for k in ("train", "val", "test")] == [800, 100, 100]
    assert sorted(sum(a.values(), []), key=int) == ids
