"""Descriptor throughput of dlib's own C++ implementation of the same network
(dlib_face_recognition_resnet_model_v1), on the same 150x150 face crops as the other
implementations. Prints one JSON line per batch size.

python3 bench/descriptor_dlib.py <inputs-dir> [seconds] [descriptors-out.json]

With a third argument it also writes dlib's descriptor of every input, so they can be compared
with face-api's reference vectors.
"""

import json
import os
import resource
import sys
import time

import importlib.util

import dlib
import numpy as np


def model_path():
    """The network file shipped by face_recognition_models, found without importing the package
    (it imports pkg_resources, which recent setuptools no longer provide)."""
    spec = importlib.util.find_spec("face_recognition_models")
    root = spec.submodule_search_locations[0]
    return os.path.join(root, "models", "dlib_face_recognition_resnet_model_v1.dat")


def main():
    inputs = sys.argv[1] if len(sys.argv) > 1 else "/tmp/descriptor-inputs"
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    with open(os.path.join(inputs, "index.json")) as f:
        names = json.load(f)
    faces = []
    for name in names:
        with open(os.path.join(inputs, f"{name}.rgb"), "rb") as f:
            faces.append(np.frombuffer(f.read(), dtype=np.uint8).reshape(150, 150, 3).copy())
    model = dlib.face_recognition_model_v1(model_path())
    if len(sys.argv) > 3:
        with open(sys.argv[3], "w") as f:
            json.dump({n: list(model.compute_face_descriptor(face)) for n, face in zip(names, faces)}, f)
    for batch in (1, 32):
        chips = [faces[i % len(faces)] for i in range(batch)]
        run = (lambda: model.compute_face_descriptor(chips[0])) if batch == 1 else \
            (lambda: model.compute_face_descriptor(chips))
        run()  # warm-up
        images, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            run()
            images += batch
        rate = images / (time.perf_counter() - start)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"impl": f"dlib {dlib.__version__} (C++, cpu)", "batch": batch,
                          "images_per_s": round(rate, 2), "threads": os.cpu_count(),
                          "peak_rss_mib": round(peak)}), flush=True)


if __name__ == "__main__":
    main()
