"""Throughput of dlib's own whole face pipeline (dlib-bin): HOG face detector (upsampled once,
as dlib's examples do), 5-point shape predictor, aligned chip and `compute_face_descriptor`,
over the decoded photos written by bench/pipeline.sh (raw RGB and index.json). One process
per core (dlib's detector is single-threaded), each looping over the photos for SECONDS.
Prints one JSON line.

python3 bench/pipeline_dlib.py INPUTS_DIR [seconds] [workers]
"""

import json
import multiprocessing
import os
import resource
import sys
import time

import dlib
import numpy as np

from lfw_dlib import models_dir


def run(args):
    inputs, seconds = args
    index = json.load(open(os.path.join(inputs, "index.json")))
    photos = [np.fromfile(os.path.join(inputs, f"{e['name']}.rgb"), dtype=np.uint8).reshape(e["height"], e["width"], 3)
              for e in index]
    models = models_dir()
    detector = dlib.get_frontal_face_detector()
    shape = dlib.shape_predictor(os.path.join(models, "shape_predictor_5_face_landmarks.dat"))
    net = dlib.face_recognition_model_v1(os.path.join(models, "dlib_face_recognition_resnet_model_v1.dat"))

    def one(photo):
        faces = detector(photo, 1)
        if not faces:
            return 0
        face = max(faces, key=lambda r: r.area())
        net.compute_face_descriptor(photo, shape(photo, face))
        return 1

    one(photos[0])  # warm-up
    images = found = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for photo in photos:
            found += one(photo)
            images += 1
    return images, found, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main():
    inputs = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else os.cpu_count()
    with multiprocessing.Pool(workers) as pool:
        results = pool.map(run, [(inputs, seconds)] * workers)
    images = sum(r[0] for r in results)
    print(json.dumps({
        "impl": f"dlib {dlib.__version__} (HOG + 5-point + resnet, {workers} processes)",
        "images_per_s": round(sum(r[0] / r[2] for r in results), 2),
        "faces_found": round(sum(r[1] for r in results) / images, 4),
        "threads": workers,
        "peak_rss_mib": round(sum(r[3] for r in results) / 1024),
    }))


if __name__ == "__main__":
    main()
