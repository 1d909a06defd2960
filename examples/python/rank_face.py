"""Ranks a face with facesim from Python: the faces of the server's gallery most like a photo.

The gRPC stubs are generated from the repository's proto/ files with grpcio-tools at start (no
hand-written client code), so this works the same from any language with gRPC.

    python3 -m pip install grpcio grpcio-tools
    export FACESIM_TOKEN=fsm_...           # a service or researcher token
    python3 examples/python/rank_face.py datasets/lfw-demo/Abdullah_Gul/Abdullah_Gul_0001.jpg -k 5

Options: --addr (default 127.0.0.1:50051), --group (one row per identity), --model (a model id;
default the active model), --proto-dir (default: proto/ of this repository).
"""

import argparse
import glob
import os
import sys
import tempfile

import grpc
import grpc_tools
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))


def load_stubs(proto_dir):
    """Compiles facesim's protos into a temporary folder and makes them importable."""
    out_dir = tempfile.mkdtemp(prefix="facesim-py-")
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    files = sorted(glob.glob(os.path.join(proto_dir, "facesim", "v1", "*.proto")))
    if not files:
        raise SystemExit(f"no facesim protos under {proto_dir}")
    rel = [os.path.relpath(f, proto_dir) for f in files]
    if protoc.main(["protoc", f"-I{proto_dir}", f"-I{well_known}",
                    f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *rel]) != 0:
        raise SystemExit("generating the stubs failed")
    sys.path.insert(0, out_dir)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", help="a face photo (JPEG, PNG, BMP, WebP, PGM/PPM)")
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--group", action="store_true", help="one row per identity")
    parser.add_argument("--model", default="", help="model id (default: the active model)")
    parser.add_argument("--addr", default=os.environ.get("FACESIM_ADDR", "127.0.0.1:50051"))
    parser.add_argument("--proto-dir", default=os.path.join(HERE, "..", "..", "proto"))
    args = parser.parse_args()
    token = os.environ.get("FACESIM_TOKEN")
    if not token:
        raise SystemExit("set FACESIM_TOKEN to a service or researcher token")

    load_stubs(args.proto_dir)
    from facesim.v1 import common_pb2, ranking_pb2, ranking_pb2_grpc

    with open(args.image, "rb") as f:
        image = f.read()
    request = ranking_pb2.RankRequest(
        query=common_pb2.FaceInput(image_data=image),
        k=args.k,
        model_id=args.model,
        group_by_identity=args.group,
    )
    ranking = ranking_pb2_grpc.RankingServiceStub(grpc.insecure_channel(args.addr))
    try:
        answer = ranking.Rank(request, metadata=[("authorization", f"Bearer {token}")], timeout=60)
    except grpc.RpcError as e:
        raise SystemExit(f"{e.code().name}: {e.details()}")
    metric = common_pb2.DistanceMetric.Name(answer.metric)
    print(f"model {answer.model_id}, {metric.removeprefix('DISTANCE_METRIC_').lower()}, "
          f"{len(answer.results)} results")
    for rank, r in enumerate(answer.results, 1):
        merged = f"  ({r.merged_images} images)" if args.group else ""
        print(f"{rank:>3}  image {r.image_id:>6}  {r.identity:<32} {r.score:.4f}{merged}")


if __name__ == "__main__":
    main()
