"""The gRPC service behind the gateway in tests/grpc.rs: grpcio's own server, speaking h2c.

Generic handlers with raw-bytes messages (no protobuf codegen): each answer is JSON the test
reads. Prints its port on the first line of stdout, then serves until killed. With a certificate
and key file as arguments it serves over TLS (h2 by ALPN) instead.
"""
import json
import sys
from concurrent import futures

import grpc


def metadata(context):
    # Binary (-bin) values are bytes; the test reads only text ones.
    return {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}


def unary(request, context):
    if request == b"fail":
        context.set_trailing_metadata((("x-trailer", "after-failure"),))
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, "order 42 is 50% shipped, not cancellable: ü")
    context.set_trailing_metadata((("x-trailer", "unary-done"),))
    reply = {
        "echo": request.decode(),
        "metadata": metadata(context),
        "time_remaining": context.time_remaining(),
        # The gateway's side of the connection: one peer for many calls means one multiplexed connection.
        "peer": context.peer(),
    }
    return json.dumps(reply).encode()


def stream(request, context):
    n = int(request.decode() or "3")
    for i in range(n):
        yield json.dumps({"part": i}).encode()
    context.set_trailing_metadata((("x-trailer", f"streamed {n}"),))


HANDLERS = {
    "Unary": grpc.unary_unary_rpc_method_handler(unary),
    "Stream": grpc.unary_stream_rpc_method_handler(stream),
}


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", HANDLERS),))
    if len(sys.argv) == 3:
        with open(sys.argv[1], "rb") as cert, open(sys.argv[2], "rb") as key:
            creds = grpc.ssl_server_credentials([(key.read(), cert.read())])
        port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    sys.exit(main())
