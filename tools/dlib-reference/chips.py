"""dlib's own face chips, the reference for facesim's alignment (server/src/faces/align.rs).

For each LFW photo of the detection reference set (raw RGB as facesim decodes the JPEGs, written
by `cargo run --example faces_inputs -- reference DIR`, so that both sides read the same pixels:
JPEG decoders differ by a few levels), dlib's HOG face detector and its 68-point shape predictor find the
landmarks, and `dlib.get_face_chip(image, shape, 150, 0.25)` cuts the aligned chip the face
descriptor was trained on. Writes OUT/<name>.png (the chip) and OUT/landmarks.json
({name: [[x, y] x 68]}, dlib's integer points) for `server/tests/faces_align.rs`.

Usage: python3 tools/dlib-reference/chips.py INPUTS_DIR OUT [COUNT]   (COUNT photos, default 8)
Needs: pip install dlib-bin==20.0.1.post1 face-recognition-models==0.3.0 numpy
"""
import json
import os
import sys

import dlib
import face_recognition_models
import numpy as np


def main():
    inputs, out = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    with open(os.path.join(inputs, "index.json")) as f:
        photos = [e for e in json.load(f) if e["name"][-5:-4] == "_" and e["name"][-4:].isdigit()][:count]
    os.makedirs(out, exist_ok=True)
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
    landmarks = {}
    for entry in photos:
        name = entry["name"]
        raw = np.fromfile(os.path.join(inputs, f"{name}.rgb"), dtype=np.uint8)
        image = raw.reshape(entry["height"], entry["width"], 3)
        faces = detector(image, 1)
        if not faces:
            print(f"{name}: dlib finds no face, skipped")
            continue
        face = max(faces, key=lambda r: r.area())
        shape = predictor(image, face)
        landmarks[name] = [[shape.part(i).x, shape.part(i).y] for i in range(68)]
        dlib.save_image(dlib.get_face_chip(image, shape, 150, 0.25), os.path.join(out, f"{name}.png"))
    with open(os.path.join(out, "landmarks.json"), "w") as f:
        json.dump(landmarks, f)
    print(f"{len(landmarks)} chips from {len(photos)} photos in {out}")


if __name__ == "__main__":
    main()
