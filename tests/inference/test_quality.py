"""The quality gate's parts that need no fitted gate: DICOM header and colour checks,
orientation arithmetic, decisions from scores, and the generated non-radiographs."""

import json

import numpy as np
import pytest

from boneage.data.negatives import FIT_VARIANTS, NEGATIVES, TEST_VARIANTS, negative_image
from boneage.errors import QualityRefusal
from boneage.inference.quality import (
    ORIENTATIONS, PixelScores, QualityGate, describe_correction, gate_scores, header_refusal, judge,
    orient, screen, undo_orientation, upright_hand_scores,
)
from boneage.io.types import ImageMetadata


@pytest.mark.parametrize("fields, expected", [
    (dict(modality="CR", body_part="HAND"), None),
    (dict(modality="DX", body_part="LEFT WRIST"), None),
    (dict(modality="OT"), None),
    (dict(), None),
    (dict(modality="CT"), "DICOM Modality is CT (computed tomography), not a radiograph"),
    (dict(modality="MR"), "DICOM Modality is MR (magnetic resonance)"),
    (dict(modality="US"), "(ultrasound)"),
    (dict(modality="DX", body_part="CHEST"), "DICOM BodyPartExamined is CHEST, not a hand or wrist"),
    (dict(modality="CR", image_type=("DERIVED", "SECONDARY", "LOCALIZER")), "LOCALIZER"),
    (dict(n_frames=12), "multi-frame DICOM object (12 frames)"),
])
def test_header_refusal(fields, expected):
    reason = header_refusal(ImageMetadata(format="dicom", **fields))
    if expected is None:
        assert reason is None
    else:
        assert expected in reason


def test_orientations_are_undone_exactly():
    image = np.arange(12, dtype=np.float32).reshape(3, 4) / 11
    assert len(ORIENTATIONS) == 8
    for cls in range(8):
        turned = orient(image, cls)
        assert turned.shape == ((3, 4) if ORIENTATIONS[cls][0] % 2 == 0 else (4, 3))
        np.testing.assert_allclose(undo_orientation(turned, cls), image, atol=1e-7)
    np.testing.assert_allclose(orient(image, 4), 1.0 - image)  # class 4: inverted, not turned
    assert describe_correction(0) == ()
    assert describe_correction(1) == ("turned 90° clockwise to upright",)
    assert describe_correction(6) == ("inverted polarity corrected (bone was dark)", "turned 180° to upright")


def _gate(**thresholds) -> QualityGate:
    d = 4
    zeros = np.zeros(d)
    return QualityGate(feature_mean=zeros, feature_scale=np.ones(d), radiograph_w=zeros,
                       radiograph_b=np.array(0.0), orientation_w=np.zeros((8, d)), orientation_b=np.zeros(8),
                       pca_components=np.eye(d)[:2], precision=np.eye(2), residual_scale=np.array(4.0),
                       **thresholds)


@pytest.mark.parametrize("scores, refused, corrections", [
    (PixelScores(0.99, 10.0, 0, 0.99), None, ()),
    (PixelScores(0.10, 10.0, 0, 0.99), "does not look like a hand radiograph", ()),
    (PixelScores(0.99, 500.0, 0, 0.99), "unlike the hand radiographs", ()),
    (PixelScores(0.99, 10.0, 4, 0.97), None, ("inverted polarity corrected (bone was dark)",)),
    (PixelScores(0.99, 10.0, 1, 0.60), "orientation or polarity unsure", ()),
])
def test_judge(scores, refused, corrections):
    reason, done = judge(_gate(radiograph_min=0.5, distance_max=100.0, orientation_sure=0.9), scores)
    assert (reason is None) == (refused is None) and done == corrections
    if refused:
        assert refused in reason


@pytest.mark.parametrize("hand_score", [0.99, 0.40])
def test_a_hand_refused_for_its_distance_is_not_said_to_look_like_another_body_part(hand_score):
    gate = _gate(radiograph_min=0.2, distance_max=100.0, orientation_sure=0.9)
    reason, _ = judge(gate, PixelScores(hand_score, 500.0, 0, 0.99, looks_like="hip or pelvis"))
    assert reason.startswith("looks like a hip or pelvis radiograph, not a hand: unlike") == (hand_score < 0.5)
    assert "unlike the hand radiographs the model was trained on (distance 500, limit 100)" in reason


@pytest.mark.parametrize("hand_score, override, refused", [
    (0.80, 0.5, False),            # a hand it is sure of: the distance alone does not refuse it
    (0.45, 0.5, True),             # doubted: the distance still refuses
    (0.80, float("inf"), True),    # a gate without the override (older files) refuses as before
])
def test_a_sure_hand_score_outweighs_the_distance(hand_score, override, refused):
    gate = _gate(radiograph_min=0.2, distance_max=100.0, orientation_sure=0.9, distance_override=override)
    reason, _ = judge(gate, PixelScores(hand_score, 500.0, 0, 0.99))
    assert (reason is not None) == refused
    if refused:
        assert "unlike the hand radiographs the model was trained on (distance 500, limit 100)" in reason
    # the override never lets through what the classifier itself refuses
    assert judge(gate, PixelScores(0.1, 500.0, 0, 0.99))[0].startswith("does not look like a hand radiograph")


def test_the_distance_override_is_stored_and_absent_in_older_files():
    gate = _gate(distance_max=7.0, distance_override=0.5)
    assert QualityGate.from_stored(gate.to_tensors(), gate.to_metadata()).distance_override == 0.5
    older = json.loads(_gate(distance_max=7.0).to_metadata())
    assert "distance_override" not in older
    assert QualityGate.from_stored(gate.to_tensors(), json.dumps(older)).distance_override == float("inf")


def test_an_upright_hand_is_decided_from_its_first_pass_alone():
    gate = _gate(radiograph_min=0.2, distance_max=100.0, orientation_sure=0.9)
    gate.radiograph_b = np.array(3.0)                        # hand probability 0.953
    gate.orientation_b = np.array([5.0] + [0.0] * 7)         # upright 0.955
    s = upright_hand_scores(gate, np.zeros(4))
    assert (s.orientation, s.distance) == (0, 0.0)
    assert s.radiograph == pytest.approx(1 / (1 + np.exp(-3.0)))
    assert s.orientation_probability == pytest.approx(np.exp(5) / (np.exp(5) + 7))
    # Anything less than a sure, near, upright hand goes to the 8-candidate consensus:
    assert upright_hand_scores(gate, np.array([0.0, 0.0, 30.0, 0.0])) is None   # distance 225 > 100
    gate.orientation_b = np.zeros(8)
    assert upright_hand_scores(gate, np.zeros(4)) is None                      # upright 1/8
    gate.orientation_b = np.array([5.0] + [0.0] * 7)
    gate.radiograph_b = np.array(-0.5)                                         # hand 0.38: above the
    assert upright_hand_scores(gate, np.zeros(4)) is None                      # threshold, below 0.5
    consensus = gate_scores(gate, np.zeros((8, 4)))
    assert consensus.radiograph == pytest.approx(1 / (1 + np.exp(0.5)))


def test_gate_arithmetic_and_storage():
    gate = _gate(distance_max=7.0)
    feats = np.array([[1.0, 2.0, 0.0, 4.0]])
    # identity precision in the subspace: 1 + 4; off it: 2 dims * 16 / residual scale 4
    assert gate.distance(feats)[0] == pytest.approx(5.0 + 2 * 16 / 4)
    assert gate.radiograph_probability(feats)[0] == pytest.approx(0.5)
    np.testing.assert_allclose(gate.orientation_probabilities(feats)[0], np.full(8, 1 / 8))
    back = QualityGate.from_stored(gate.to_tensors(), gate.to_metadata())
    assert back.distance_max == 7.0 and back.distance(feats)[0] == pytest.approx(13.0)


class _NoGate:
    quality_gate = None


def test_screen_refuses_colour_and_headers_unless_forced():
    pixels = np.zeros((32, 32), np.float32)
    colour = ImageMetadata(format="png", colourfulness=0.2)
    with pytest.raises(QualityRefusal, match="photo.png: not assessed: a colour image"):
        screen(_NoGate(), pixels, colour, name="photo.png")
    same, verdict = screen(_NoGate(), pixels, colour, force=True)
    assert same is pixels and verdict.forced and verdict.label == "forced" and "colour" in verdict.reason
    ct = ImageMetadata(format="dicom", modality="CT")
    with pytest.raises(QualityRefusal, match="Modality is CT"):
        screen(_NoGate(), pixels, ct)
    _, verdict = screen(_NoGate(), pixels, ImageMetadata(format="png", colourfulness=0.01))
    assert verdict.accepted and verdict.label == "accepted"


def test_colourfulness_of_files(tmp_path):
    import cv2

    from boneage.io import read_image

    gray = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))
    cv2.imwrite(str(tmp_path / "gray_as_rgb.png"), np.dstack([gray] * 3))
    cv2.imwrite(str(tmp_path / "colour.png"), np.dstack([gray, 255 - gray, gray]))
    assert read_image(tmp_path / "gray_as_rgb.png").metadata.colourfulness == 0.0
    assert read_image(tmp_path / "colour.png").metadata.colourfulness > 0.4


def test_negatives_are_reproducible_and_split_into_fit_and_test_variants():
    assert set(FIT_VARIANTS).isdisjoint(TEST_VARIANTS)
    assert set(FIT_VARIANTS) | set(TEST_VARIANTS) <= set(NEGATIVES.names())
    kinds = lambda vs: {v.split("/")[0] for v in vs}
    assert kinds(FIT_VARIANTS) == kinds(TEST_VARIANTS)     # every kind has an unseen variant
    for variant in FIT_VARIANTS + TEST_VARIANTS:
        a = negative_image(variant, 3, size=(64, 48))
        assert a.shape == (64, 48) and a.dtype == np.float32 and 0 <= a.min() <= a.max() <= 1
        np.testing.assert_array_equal(a, negative_image(variant, 3, size=(64, 48)))


def _class_gate(**thresholds) -> QualityGate:
    """A 4-feature gate whose classes hand / generated / leg / hip each own one feature."""
    d = 4
    return QualityGate(feature_mean=np.zeros(d), feature_scale=np.ones(d), radiograph_w=np.eye(d) * 10,
                       radiograph_b=np.zeros(d), orientation_w=np.zeros((8, d)), orientation_b=np.zeros(8),
                       pca_components=np.eye(d)[:2], precision=np.eye(2), residual_scale=np.array(4.0),
                       class_names=("hand", "generated", "leg", "hip"), **thresholds)


def test_a_multi_class_gate_says_which_body_part_an_image_looks_like():
    from boneage.inference.quality import scores_from_candidates

    gate = _class_gate(radiograph_min=0.5, distance_max=1e9)
    rows = lambda f: np.tile(np.asarray(f, float), (8, 1))       # the 8 candidate corrections
    hand = scores_from_candidates(gate, rows([1, 0, 0, 0]))
    leg = scores_from_candidates(gate, rows([0, 0, 1, 0]))
    drawing = scores_from_candidates(gate, rows([0, 1, 0, 0]))
    unsure = scores_from_candidates(gate, rows([0, 0, 1, 1]))     # leg and hip alike: no name
    assert hand.radiograph > 0.99 and judge(gate, hand)[0] is None
    assert leg.radiograph < 0.01 and leg.looks_like == "leg, knee, ankle or foot"
    assert judge(gate, leg)[0].startswith("looks like a leg, knee, ankle or foot radiograph, not a hand")
    assert drawing.looks_like == "" and judge(gate, drawing)[0].startswith("does not look like a hand radiograph")
    assert unsure.looks_like == "" and judge(gate, unsure)[0].startswith("does not look like a hand radiograph")


def test_a_multi_class_gate_is_stored_and_read_back_with_its_classes():
    from boneage.inference.onnx_model import gate_from_json, gate_to_json

    gate = _class_gate(radiograph_min=0.3, distance_max=5.0)
    feats = np.array([[0.0, 0.0, 0.0, 1.0]])
    for back in (QualityGate.from_stored(gate.to_tensors(), gate.to_metadata()), gate_from_json(gate_to_json(gate))):
        assert back.class_names == gate.class_names and back.radiograph_min == 0.3
        np.testing.assert_allclose(back.class_probabilities(feats), gate.class_probabilities(feats), rtol=1e-6)
        assert back.looks_like(back.class_probabilities(feats)[0]) == "hip or pelvis"
    import json

    meta = json.loads(gate.to_metadata())
    meta["class_names"] = ["hand", "leg"]                      # 2 names for a 4-class classifier
    with pytest.raises(ValueError, match="classes"):
        QualityGate.from_stored(gate.to_tensors(), json.dumps(meta))


def _negatives_folder(tmp_path, rows, header="id,body_part", images=True):
    import cv2

    folder = tmp_path / "neg"
    (folder / "images").mkdir(parents=True)
    (folder / "labels.csv").write_text(header + "\n" + "".join(f"{i},{p}\n" for i, p in rows))
    if images:
        for i, _ in rows:
            cv2.imwrite(str(folder / "images" / f"{i}.png"), np.full((40, 30), 100, np.uint8))
    return folder


def test_negatives_folders_are_read_and_split_by_body_part_with_a_seed(tmp_path):
    from boneage.data.negatives import read_body_part_folder, split_body_parts

    rows = [(f"l{i}", "leg") for i in range(6)] + [(f"h{i}", "hip") for i in range(4)] + [("s0", "shoulder"), ("s1", "shoulder")]
    images = read_body_part_folder(_negatives_folder(tmp_path, rows))
    assert [im.id for im in images] == [i for i, _ in rows] and images[0].path.name == "l0.png"
    fit, test = split_body_parts(images, 0.5, seed=0)
    assert sorted(im.id for im in fit + test) == sorted(i for i, _ in rows)
    for part, n in (("leg", 3), ("hip", 2), ("shoulder", 1)):
        assert sum(im.body_part == part for im in test) == n == sum(im.body_part == part for im in fit)
    assert [im.id for im in split_body_parts(images, 0.5, seed=0)[1]] == [im.id for im in test]
    assert [im.id for im in split_body_parts(images, 0.5, seed=1)[1]] != [im.id for im in test]


def test_bad_negatives_folders_are_one_line_errors(tmp_path, cli):
    from boneage.data.negatives import read_body_part_folder, split_body_parts
    from boneage.errors import InputError

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no labels.csv in this negatives folder"):
        read_body_part_folder(empty)
    with pytest.raises(InputError, match=r"line 3: body part 'hand' is not a known one \(ankle, chest"):
        read_body_part_folder(_negatives_folder(tmp_path / "a", [("x", "leg"), ("y", "Hand")]))
    with pytest.raises(InputError, match="needs the columns id,body_part"):
        read_body_part_folder(_negatives_folder(tmp_path / "b", [("x", "leg")], header="id,part"))
    with pytest.raises(InputError, match="1 id\\(s\\) have no image"):
        read_body_part_folder(_negatives_folder(tmp_path / "c", [("x", "leg")], images=False))
    images = read_body_part_folder(_negatives_folder(tmp_path / "d", [("a", "leg"), ("b", "leg"), ("c", "hip")]))
    with pytest.raises(InputError, match="leaves body part 'hip' no test image \\(1 image\\(s\\), test fraction 0.4\\)"):
        split_body_parts(images, 0.4)
    with pytest.raises(InputError, match="leaves body part 'hip' no image to fit on"):
        split_body_parts(images, 0.6)
    # the command stops on them before it loads a model or reads any radiograph
    code, out, err = cli("calibrate", tmp_path / "no-such-data", "--negatives", empty, "--out", tmp_path / "m.safetensors")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"boneage: error: {empty}: no labels.csv in this negatives folder")
