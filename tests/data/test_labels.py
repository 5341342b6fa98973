import numpy as np
import pytest

from boneage.data import load_samples, read_labels, train_val_split
from boneage.errors import InputError


def write(p, text):
    p.write_text(text)
    return p


def test_three_rsna_layouts(tmp_path):
    train = read_labels(write(tmp_path / "t.csv", "id,boneage,male\n1377,180,False\n1380,120,True\n"))
    assert [(r.id, r.boneage, r.male) for r in train] == [("1377", 180.0, False), ("1380", 120.0, True)]
    val = read_labels(write(tmp_path / "v.csv", "Image ID,male,Bone Age (months)\n1386,FALSE,30\n"))
    assert (val[0].id, val[0].boneage, val[0].male) == ("1386", 30.0, False)
    test = read_labels(write(tmp_path / "x.csv", "Case ID,Sex,Ground truth bone age (months)\n4360,M,168.934\n"))
    assert (test[0].id, test[0].boneage, test[0].male) == ("4360", pytest.approx(168.934), True)


def test_missing_column_names_file_and_columns(tmp_path):
    p = write(tmp_path / "bad.csv", "id,age\n1,2\n")
    with pytest.raises(InputError, match=r"bad.csv: missing sex column .*found columns \['id', 'age'\]"):
        read_labels(p)


@pytest.mark.parametrize("body,msg", [("1,abc,True\n", "not a number"), ("1,12,X\n", "sex must be M or F"),
                                      ("1,12,True\n1,13,False\n", "duplicate id '1'"), ("", "no rows")])
def test_bad_rows(tmp_path, body, msg):
    p = write(tmp_path / "l.csv", "id,boneage,male\n" + body)
    with pytest.raises(InputError, match=msg):
        read_labels(p)


def test_ids_without_images_are_listed(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "1.png").write_bytes(b"x")
    write(tmp_path / "labels.csv", "id,boneage,male\n1,10,True\n2,20,False\n3,30,True\n")
    with pytest.raises(InputError, match=r"2 id\(s\) have no image in .*: 2, 3"):
        load_samples(tmp_path)
    assert len(load_samples(tmp_path, limit=1)) == 1


def test_a_folder_of_jpegs_and_mixed_extensions_is_read(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("1.jpg", "2.png", "3.JPEG", "notes.txt"):
        (tmp_path / "images" / name).write_bytes(b"x")
    write(tmp_path / "labels.csv", "id,boneage,male\n1,10,True\n2,20,False\n3,30,True\n")
    assert [s.path.name for s in load_samples(tmp_path)] == ["1.jpg", "2.png", "3.JPEG"]


def test_two_images_of_one_id_are_refused_naming_both(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("7.png", "7.jpg", "8.png"):
        (tmp_path / "images" / name).write_bytes(b"x")
    write(tmp_path / "labels.csv", "id,boneage,male\n8,10,True\n")
    with pytest.raises(InputError, match=r"images: two images for id '7': 7.jpg and 7.png; keep one$"):
        load_samples(tmp_path)


def test_split_is_deterministic_disjoint_and_complete():
    tr, va = train_val_split(100, 0.2, seed=5)
    tr2, va2 = train_val_split(100, 0.2, seed=5)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    assert len(va) == 20 and len(tr) == 80
    assert set(tr) | set(va) == set(range(100)) and not set(tr) & set(va)
    assert not np.array_equal(train_val_split(100, 0.2, seed=6)[1], va)
    assert len(train_val_split(3, 0.01)[1]) == 1
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(10, 1.5)
