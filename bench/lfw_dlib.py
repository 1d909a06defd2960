"""LFW View 2 through dlib's own full pipeline (dlib-bin): HOG face detector (upsampled once),
5-point shape predictor, `compute_face_descriptor` (dlib_face_recognition_resnet_model_v1, full
precision), scored with the same protocol as `facesim eval lfw`: Euclidean distance, 10 folds,
each fold's threshold the best-accuracy midpoint on the other nine (smallest best one wins).

Like `facesim eval lfw`, the largest face is used; where the HOG detector finds none, the face is
taken as the centred box dlib's detector would give an LFW face (LFW photos are centred on the
person), and the count is printed.

python3 bench/lfw_dlib.py PAIRS IMAGES_DIR [--workers N] [--chips DIR] [--descriptors FILE]

--chips writes dlib's 150x150 aligned chip of every image as DIR/<person>/<person>_<nnnn>.png,
for `facesim eval lfw --images DIR --face-mode center --ext png` (facesim's descriptor on dlib's
chips); --descriptors writes {image: [128 floats]} as JSON. Prints one JSON line at the end.
"""

import argparse
import importlib.util
import json
import multiprocessing
import os
import resource
import statistics
import time

import dlib
import numpy as np


def models_dir():
    """face_recognition_models' folder, found without importing the package (it imports
    pkg_resources, which recent setuptools no longer provide)."""
    spec = importlib.util.find_spec("face_recognition_models")
    return os.path.join(spec.submodule_search_locations[0], "models")


def parse_pairs(path):
    lines = open(path).read().split("\n")
    folds, per_class = (int(x) for x in lines[0].split())
    pairs, k = [], 1
    for fold in range(folds):
        for _ in range(2 * per_class):
            f = lines[k].split()
            k += 1
            if len(f) == 3:
                pairs.append(((f[0], int(f[1])), (f[0], int(f[2])), True, fold))
            else:
                pairs.append(((f[0], int(f[1])), (f[2], int(f[3])), False, fold))
    return folds, pairs


_state = {}


def _init(chips):
    models = models_dir()
    _state["detector"] = dlib.get_frontal_face_detector()
    _state["shape"] = dlib.shape_predictor(os.path.join(models, "shape_predictor_5_face_landmarks.dat"))
    _state["net"] = dlib.face_recognition_model_v1(os.path.join(models, "dlib_face_recognition_resnet_model_v1.dat"))
    _state["chips"] = chips


def _describe(job):
    key, path = job
    image = dlib.load_rgb_image(path)
    h, w = image.shape[:2]
    faces = list(_state["detector"](image, 1))
    if faces:
        box = max(faces, key=lambda r: r.area())
    else:
        # The size of the box dlib's detector gives the face of a 250x250 LFW photo.
        side = 0.42 * min(w, h)
        box = dlib.rectangle(int(w / 2 - side / 2), int(h / 2 - side / 2), int(w / 2 + side / 2), int(h / 2 + side / 2))
    shape = _state["shape"](image, box)
    descriptor = list(_state["net"].compute_face_descriptor(image, shape))
    if _state["chips"]:
        out = os.path.join(_state["chips"], key[0], f"{key[0]}_{key[1]:04d}.png")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        dlib.save_image(dlib.get_face_chip(image, shape, 150, 0.25), out)
    return key, descriptor, len(faces)


def best_accuracy_threshold(d, same):
    order = np.argsort(d, kind="stable")
    right = int(np.sum(~same))
    best_t, best_right = d[order[0]] - 1.0, right
    k = 0
    while k < len(order):
        x = d[order[k]]
        while k < len(order) and d[order[k]] == x:
            right += 1 if same[order[k]] else -1
            k += 1
        if right > best_right:
            nxt = d[order[k]] if k < len(order) else x + 1.0
            best_t, best_right = (x + nxt) / 2.0, right
    return best_t


def k_fold(d, same, fold_of, folds):
    out = []
    for k in range(folds):
        test = fold_of == k
        t = best_accuracy_threshold(d[~test], same[~test])
        out.append((t, float(np.mean((d[test] < t) == same[test]))))
    return out


def roc_auc(d, same):
    # Probability that a same pair is closer than a different pair (ties count half).
    pos, neg = np.sort(d[same]), np.sort(d[~same])
    below = np.searchsorted(neg, pos, side="left")
    equal = np.searchsorted(neg, pos, side="right") - below
    return float(np.sum(len(neg) - below - equal + 0.5 * equal) / (len(pos) * len(neg)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("pairs")
    p.add_argument("images")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--chips")
    p.add_argument("--descriptors")
    args = p.parse_args()
    folds, pairs = parse_pairs(args.pairs)
    keys = sorted({k for a, b, _, _ in pairs for k in (a, b)})
    jobs = [(k, os.path.join(args.images, k[0], f"{k[0]}_{k[1]:04d}.jpg")) for k in keys]
    started = time.time()
    with multiprocessing.Pool(args.workers, _init, (args.chips,)) as pool:
        results = pool.map(_describe, jobs, chunksize=16)
    seconds = time.time() - started
    vectors = {k: np.array(v) for k, v, _ in results}
    no_face = sum(1 for _, _, n in results if n == 0)
    several = sum(1 for _, _, n in results if n > 1)
    d = np.array([np.linalg.norm(vectors[a] - vectors[b]) for a, b, _, _ in pairs])
    same = np.array([s for _, _, s, _ in pairs])
    fold_of = np.array([f for _, _, _, f in pairs])
    per_fold = k_fold(d, same, fold_of, folds)
    accuracies = [a for _, a in per_fold]
    if args.descriptors:
        with open(args.descriptors, "w") as f:
            json.dump({f"{k[0]}_{k[1]:04d}": v for k, v, _ in results}, f)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({
        "impl": "dlib 20.0.1 full pipeline (HOG detector, 5-point shape, resnet v1)",
        "pairs": len(pairs),
        "images": len(keys),
        "accuracy_mean": statistics.mean(accuracies),
        "accuracy_std": statistics.stdev(accuracies),
        "auc": roc_auc(d, same),
        "threshold_mean": statistics.mean(t for t, _ in per_fold),
        "no_face": no_face,
        "several_faces": several,
        "images_per_s": len(keys) / seconds,
        "workers": args.workers,
        "peak_rss_mib_sum": peak // 1024,
    }))


if __name__ == "__main__":
    main()
