"""Reads sessions with the standard Python gRPC client (grpcio, with the
protobuf runtime's upb backend) and checks that every answer decodes.

Used by tests/api/abuse.rs: the deepest values the service accepts must be
readable by every standard client, and upb stops decoding at 100 levels of
nested messages. The message classes come from the service's own descriptor
set, so no generated code is needed.

    python3 decode_sessions.py DESCRIPTOR_SET ADDR TOKEN SESSION_ID...

Prints one JSON line: the deepest nesting seen in each session's config,
report, failure and events, and exits 1 when anything failed to decode.
"""

import json
import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.internal import api_implementation


def classes(path):
    fds = descriptor_pb2.FileDescriptorSet()
    with open(path, "rb") as f:
        fds.ParseFromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for file in fds.file:
        pool.Add(file)
    return lambda name: message_factory.GetMessageClass(pool.FindMessageTypeByName("mentorship.v1." + name))


def depth(value):
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def main():
    descriptor_set, addr, token = sys.argv[1:4]
    ids = sys.argv[4:]
    msg = classes(descriptor_set)
    channel = grpc.insecure_channel(addr)
    meta = [("authorization", "Bearer " + token)]

    def unary(method, request, response):
        call = channel.unary_unary(
            "/mentorship.v1.SessionService/" + method,
            request_serializer=msg(request).SerializeToString,
            response_deserializer=msg(response).FromString,
        )
        return call

    get = unary("GetSession", "GetSessionRequest", "GetSessionResponse")
    events = unary("ListSessionEvents", "ListSessionEventsRequest", "ListSessionEventsResponse")
    listing = unary("ListSessions", "ListSessionsRequest", "ListSessionsResponse")
    watch = channel.unary_stream(
        "/mentorship.v1.SessionService/WatchSession",
        request_serializer=msg("WatchSessionRequest").SerializeToString,
        response_deserializer=msg("WatchSessionResponse").FromString,
    )

    seen = {"backend": api_implementation.Type(), "sessions": {}}
    for session_id in ids:
        session = get(msg("GetSessionRequest")(session_id=session_id), metadata=meta, timeout=10).session
        as_json = json_format.MessageToDict(session)
        logged = events(msg("ListSessionEventsRequest")(session_id=session_id, page_size=100), metadata=meta, timeout=10)
        watched = [
            json_format.MessageToDict(m)
            for m in watch(msg("WatchSessionRequest")(session_id=session_id), metadata=meta, timeout=10)
        ]
        seen["sessions"][session_id] = {
            "status": as_json.get("status"),
            "custom_settings": depth(as_json.get("config", {}).get("customSettings", {})),
            "report_data": depth(as_json.get("report", {}).get("data", {})),
            "failure_details": depth(as_json.get("failure", {}).get("details", {})),
            "event_details": max((depth(json_format.MessageToDict(e).get("details", {})) for e in logged.events), default=0),
            "watched": len(watched),
        }
    page = listing(msg("ListSessionsRequest")(page_size=100), metadata=meta, timeout=10)
    seen["listed"] = len(page.sessions)
    print(json.dumps(seen, sort_keys=True))


if __name__ == "__main__":
    try:
        main()
    except Exception as err:  # a decode failure surfaces here, as grpc.RpcError or DecodeError
        print(json.dumps({"error": f"{type(err).__name__}: {err}"}))
        sys.exit(1)
