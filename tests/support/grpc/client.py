"""The gRPC client in front of the gateway in tests/grpc.rs: grpcio's own channel, over TLS (h2
by ALPN) or plain h2c. One call per run, described by the JSON in argv[1]:
{"target", "ca"?: PEM file (TLS when set), "method", "stream"?: bool, "request", "token"?,
"timeout"?: seconds}. Prints one JSON line: status code name, details, the answers, and both
kinds of metadata.
"""
import json
import sys

import grpc


def text(md):
    return {k: v for k, v in (md or ()) if isinstance(v, str)}


def main():
    spec = json.loads(sys.argv[1])
    if spec.get("ca"):
        with open(spec["ca"], "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        channel = grpc.secure_channel(spec["target"], creds)
    else:
        channel = grpc.insecure_channel(spec["target"])
    md = [("authorization", "Bearer " + spec["token"])] if spec.get("token") else []
    request = spec.get("request", "").encode()
    timeout = spec.get("timeout")
    out = {"responses": []}
    with channel:
        if spec.get("stream"):
            call = channel.unary_stream(spec["method"])(request, metadata=md, timeout=timeout)
            try:
                for r in call:
                    out["responses"].append(r.decode())
            except grpc.RpcError:
                pass
        else:
            stub = channel.unary_unary(spec["method"])
            try:
                r, call = stub.with_call(request, metadata=md, timeout=timeout)
                out["responses"].append(r.decode())
            except grpc.RpcError as e:
                call = e
        out["code"] = call.code().name
        out["details"] = call.details()
        out["initial_metadata"] = text(call.initial_metadata())
        out["trailing_metadata"] = text(call.trailing_metadata())
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
