"""Interop check with a non-Rust gRPC stack (Python grpcio), run by .ci/run.

Generates stubs from proto/ with grpcio-tools, then against a running conduit:
reflection (v1alpha, the version grpcio-reflection speaks) lists the services, health
answers SERVING, a user registered over gRPC reads itself back with its token, and a
refusal carries its google.rpc.ErrorInfo reason, which names a value of the
conduit.v1.Reason enum (also found through reflection).
Usage: python_client.py HOST:PORT
"""

import pathlib
import sys
import tempfile
import uuid

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parents[2]


def generate_stubs(out: pathlib.Path) -> None:
    protos = [str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto")]
    import grpc_tools

    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{ROOT / 'proto'}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}", *protos]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    sys.path.insert(0, str(out))


def main(target: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        generate_stubs(pathlib.Path(tmp))
        from conduit.v1 import errors_pb2, users_pb2, users_pb2_grpc

        channel = grpc.insecure_channel(target)

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        services = {s.name for r in responses for s in r.list_services_response.service}
        assert "conduit.v1.UserService" in services, services
        assert "grpc.health.v1.Health" in services, services
        responses = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol="conduit.v1.Reason")])
        )
        files = [r.file_descriptor_response.file_descriptor_proto for r in responses]
        assert files and files[0], "reflection does not know conduit.v1.Reason"

        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "conduit.v1.UserService"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
            assert status == health_pb2.HealthCheckResponse.SERVING, (service, status)

        users = users_pb2_grpc.UserServiceStub(channel)
        name = "py" + uuid.uuid4().hex[:10]
        registered = users.Register(users_pb2.RegisterRequest(username=name, email=f"{name}@example.com", password="pythonpw"))
        me = users.GetCurrentUser(
            users_pb2.GetCurrentUserRequest(), metadata=[("authorization", f"Token {registered.user.token}")]
        )
        assert me.user.username == name, me

        # Usernames are unique regardless of case; the reason is machine-readable
        # (google.rpc.ErrorInfo in grpc-status-details-bin), decoded by grpcio-status.
        try:
            users.Register(
                users_pb2.RegisterRequest(username=name.upper(), email="other@example.com", password="pythonpw")
            )
            raise AssertionError("duplicate username accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.ALREADY_EXISTS, e.code()
            status = rpc_status.from_call(e)
            infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
            assert len(infos) == 1, status
            info = error_details_pb2.ErrorInfo()
            infos[0].Unpack(info)
            assert (info.reason, info.domain) == ("USERNAME_TAKEN", "conduit"), info
            # The reason is the enum value's name without its prefix.
            assert errors_pb2.Reason.Value("REASON_" + info.reason) == errors_pb2.REASON_USERNAME_TAKEN

        print("python grpcio interop: 6 passed, 0 failed")


if __name__ == "__main__":
    main(sys.argv[1])
