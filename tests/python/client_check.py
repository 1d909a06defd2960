"""Calls a running facesim server from Python with stubs generated from proto/ by grpcio-tools.

Proves the API is language-neutral. Used by the e2e test `python_client`; run it by hand with
  python3 tests/python/client_check.py --addr 127.0.0.1:50051 --proto-dir proto \
      --out-dir /tmp/facesim-py --face datasets/lfw-demo/Abdullah_Gul/Abdullah_Gul_0001.jpg
and FACESIM_TOKEN set to an admin or researcher token.
"""

import argparse
import glob
import os
import sys

import grpc
import grpc_tools
from grpc_tools import protoc


def generate(proto_dir, out_dir):
    """Generates the Python modules for every facesim proto file into out_dir."""
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    files = sorted(glob.glob(os.path.join(proto_dir, "facesim", "v1", "*.proto")))
    rel = [os.path.relpath(f, proto_dir) for f in files]
    code = protoc.main(["protoc", f"-I{proto_dir}", f"-I{well_known}",
                        f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *rel])
    if code != 0:
        raise SystemExit(f"protoc failed with {code}")
    sys.path.insert(0, out_dir)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", required=True)
    parser.add_argument("--proto-dir", required=True)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--face", required=True)
    args = parser.parse_args()
    token = os.environ["FACESIM_TOKEN"]

    generate(args.proto_dir, args.out_dir)
    from facesim.v1 import admin_pb2, admin_pb2_grpc, dataset_pb2, dataset_pb2_grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    channel = grpc.insecure_channel(args.addr)
    auth = [("authorization", f"Bearer {token}")]
    passed, failed = 0, 0

    def check(name, condition, detail=""):
        nonlocal passed, failed
        if condition:
            passed += 1
            print(f"ok   {name}")
        else:
            failed += 1
            print(f"FAIL {name} {detail}")

    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    check("health is SERVING", health.status == health_pb2.HealthCheckResponse.SERVING, health)

    services = ProtoReflectionDescriptorDatabase(channel).get_services()
    check("reflection lists DatasetService", "facesim.v1.DatasetService" in services, services)

    me = admin_pb2_grpc.AdminServiceStub(channel).WhoAmI(admin_pb2.WhoAmIRequest(), metadata=auth)
    check("WhoAmI answers", me.user.name != "" and me.token_id > 0, me)

    datasets = dataset_pb2_grpc.DatasetServiceStub(channel)
    with open(args.face, "rb") as f:
        data = f.read()
    request = dataset_pb2.ImportImagesRequest(dataset="python", identity="Py_Face",
                                              file_name=os.path.basename(args.face), data=data)
    report = datasets.ImportImages(iter([request]), metadata=auth)
    check("client-streaming import", report.imported == 1 and
          report.results[0].outcome == dataset_pb2.IMPORT_OUTCOME_IMPORTED, report)

    listing = datasets.ListImages(dataset_pb2.ListImagesRequest(dataset="python"), metadata=auth)
    check("ListImages shows the import", [i.identity for i in listing.images] == ["Py_Face"], listing)

    try:
        datasets.ListImages(dataset_pb2.ListImagesRequest())
        check("no token is refused", False, "call succeeded")
    except grpc.RpcError as e:
        check("no token is refused", e.code() == grpc.StatusCode.UNAUTHENTICATED, e)

    print(f"python-client: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
