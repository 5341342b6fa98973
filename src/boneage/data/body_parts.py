"""The classes of radiograph the quality gate tells apart: hands, the body parts of real
negatives (``xray-other``), and generated non-radiographs. Shared by the negatives' reader
(:mod:`boneage.data.negatives`) and the gate (:mod:`boneage.inference.quality`)."""

#: Body parts a folder of real non-hand radiographs may name (``labels.csv``: ``id,body_part``),
#: and how a refusal describes an image the gate takes for one ("looks like a hip or pelvis
#: radiograph, not a hand"). The description says what that class's radiographs show: the
#: FracAtlas ``leg`` images are feet, ankles, knees and long bones; its ``shoulder`` images
#: show the chest wall beside the joint.
BODY_PARTS = {
    "leg": "leg, knee, ankle or foot", "foot": "foot or ankle", "ankle": "foot or ankle",
    "knee": "knee", "hip": "hip or pelvis", "pelvis": "hip or pelvis",
    "shoulder": "shoulder or chest", "chest": "chest", "elbow": "elbow", "forearm": "forearm",
    "spine": "spine", "skull": "skull", "dental": "dental panoramic",
}
#: The class of generated non-radiographs in a gate's classifier (:mod:`boneage.data.negatives`).
GENERATED = "generated"
#: The class of hand radiographs: always class 0 of a gate's classifier.
HAND = "hand"
