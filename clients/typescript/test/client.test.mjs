// The generated client against a running server (scripts/test-clients
// starts one): MENTORSHIP_URL (http://host:port) and MENTORSHIP_TOKEN (a
// coordinator's token).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRegistry, fromJson, toJson } from "@bufbuild/protobuf";
import { anyUnpack, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import {
  BadRequestSchema,
  BookingService,
  DirectoryService,
  ErrorInfoSchema,
  PreconditionFailureSchema,
  ResourceInfoSchema,
  StatusError,
  StatusSchema,
  watchEvents,
  WatchSessionResponseSchema,
  GetSessionResponseSchema,
  ListSessionEventsResponseSchema,
  SessionService,
  SessionStatus,
} from "../index.js";
import { flow } from "../build/examples/flow.js";

const baseUrl = process.env.MENTORSHIP_URL ?? "http://127.0.0.1:50051";
const token = process.env.MENTORSHIP_TOKEN;
assert.ok(token, "MENTORSHIP_TOKEN: a coordinator's token");

const auth = (next) => (req) => {
  req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};
const transports = {
  grpc: createGrpcTransport({ baseUrl, interceptors: [auth] }),
  "grpc-web": createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors: [auth] }),
};

/** A mentee and a mentor with a listing, made through `transport`. */
async function world(transport) {
  const directory = createClient(DirectoryService, transport);
  const { mentee } = await directory.upsertMentee({ mentee: { id: crypto.randomUUID(), displayName: "Ada" } });
  const { mentor } = await directory.upsertMentor({
    mentor: { userId: crypto.randomUUID(), displayName: "Grace", timezone: "UTC", acceptingSessions: true, skillAreas: ["rust"] },
  });
  const { listing } = await directory.upsertListing({
    listing: { mentorId: mentor.id, title: "Code review", skillArea: "rust" },
  });
  return { mentee, mentor, listing };
}

for (const [name, transport] of Object.entries(transports)) {
  test(`the booking → session flow over ${name}`, async () => {
    const { mentee, listing } = await world(transport);
    const bookings = createClient(BookingService, transport);
    const sessions = createClient(SessionService, transport);
    const start = new Date(Date.now() + 9 * 24 * 3600 * 1000);
    const requestId = crypto.randomUUID();
    const request = {
      listingId: listing.id,
      menteeId: mentee.id,
      startTime: timestampFromDate(start),
      endTime: timestampFromDate(new Date(start.getTime() + 3600 * 1000)),
      requestId,
    };
    const { booking } = await bookings.createBooking(request);
    const { booking: again } = await bookings.createBooking(request);
    assert.equal(again.id, booking.id, "the same request_id answers the first outcome");
    const { session } = await bookings.acceptBooking({ bookingId: booking.id });
    assert.equal(session.status, SessionStatus.SCHEDULED);
    const started = await sessions.startSession({ sessionId: session.id });
    assert.equal(started.session.status, SessionStatus.ACTIVE);
    const paused = await sessions.pauseSession({ sessionId: session.id, reason: "lunch", etag: started.session.etag });
    assert.equal(paused.session.status, SessionStatus.PAUSED);
    await sessions.resumeSession({ sessionId: session.id });
    const done = await sessions.completeSession({ sessionId: session.id, report: { summary: "good", overallScore: 5 } });
    assert.equal(done.session.status, SessionStatus.COMPLETED);
    const { events } = await sessions.listSessionEvents({ sessionId: session.id });
    assert.deepEqual(
      events.map((e) => e.toStatus),
      [SessionStatus.SCHEDULED, SessionStatus.ACTIVE, SessionStatus.PAUSED, SessionStatus.ACTIVE, SessionStatus.COMPLETED],
    );
  });
}

test("a live WatchSession sees the change as it commits (the README's example)", async () => {
  assert.equal(await flow(baseUrl, token), SessionStatus.PAUSED);
});

test("a rich error decodes to its ErrorInfo reason", async () => {
  for (const transport of Object.values(transports)) {
    const sessions = createClient(SessionService, transport);
    const err = await sessions.getSession({ sessionId: crypto.randomUUID() }).catch((e) => e);
    assert.ok(err instanceof ConnectError, String(err));
    assert.equal(err.code, Code.NotFound);
    const [info] = err.findDetails(ErrorInfoSchema);
    assert.equal(info?.reason, "SESSION_NOT_FOUND");
    assert.equal(info?.domain, "mentorship.v1");
  }
});

test("REST answers decode with the generated fromJson, equal to gRPC's", async () => {
  const transport = transports.grpc;
  const { mentee, listing } = await world(transport);
  const sessions = createClient(SessionService, transport);
  const { session } = await sessions.createSession({ menteeId: mentee.id, listingId: listing.id });
  await sessions.pauseSession({ sessionId: session.id, reason: "so nothing moves" });
  const rest = async (path) => {
    const response = await fetch(`${baseUrl}/api/mentorship${path}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(response.status, 200, path);
    return { json: await response.json(), etag: response.headers.get("etag") };
  };
  const got = await rest(`/sessions/${session.id}`);
  // Strict: an unknown field (any drift from canonical JSON) throws.
  const decoded = fromJson(GetSessionResponseSchema, got.json);
  const byGrpc = await sessions.getSession({ sessionId: session.id });
  assert.deepEqual(toJson(GetSessionResponseSchema, decoded), toJson(GetSessionResponseSchema, byGrpc));
  assert.equal(got.etag, `"${byGrpc.session.etag}"`);
  const events = fromJson(ListSessionEventsResponseSchema, (await rest(`/sessions/${session.id}/events`)).json);
  assert.equal(events.events.length, 2);
  assert.equal(typeof events.events[0].seq, "bigint", "64-bit integers decode from their JSON strings");
  const error = await fetch(`${baseUrl}/api/mentorship/sessions/${crypto.randomUUID()}`, {
    headers: { authorization: `Bearer ${token}` },
  });
  assert.equal(error.status, 404);
  // The whole google.rpc.Status, its details decoded by their @type.
  const registry = createRegistry(ErrorInfoSchema, BadRequestSchema, PreconditionFailureSchema, ResourceInfoSchema);
  const status = fromJson(StatusSchema, await error.json(), { registry });
  assert.equal(status.code, Code.NotFound);
  const info = status.details.find((d) => d.typeUrl === "type.googleapis.com/google.rpc.ErrorInfo");
  assert.equal(anyUnpack(info, ErrorInfoSchema).reason, "SESSION_NOT_FOUND");
});

test("a watch over Server-Sent Events, read with the client's fetch-based reader, resumes by its last id", async () => {
  const transport = transports.grpc;
  const { mentee, listing } = await world(transport);
  const sessions = createClient(SessionService, transport);
  const { session } = await sessions.createSession({ menteeId: mentee.id, listingId: listing.id });
  const url = `${baseUrl}/api/mentorship/sessions/${session.id}:watch`;
  const controller = new AbortController();
  const events = watchEvents(url, { token, signal: controller.signal });
  const first = await events.next();
  const snapshot = fromJson(WatchSessionResponseSchema, first.value.data);
  assert.equal(snapshot.item.case, "session");
  assert.equal(snapshot.item.value.id, session.id);
  await sessions.pauseSession({ sessionId: session.id, reason: "lunch" });
  const paused = await events.next();
  const event = fromJson(WatchSessionResponseSchema, paused.value.data);
  assert.equal(event.item.value.toStatus, SessionStatus.PAUSED);
  assert.equal(paused.value.id, String(event.item.value.seq));
  controller.abort();
  await events.return();

  // Missed while away, then read from where it left off.
  await sessions.resumeSession({ sessionId: session.id });
  await sessions.cancelSession({ sessionId: session.id, reason: "done" });
  const statuses = [];
  for await (const e of watchEvents(url, { token, lastEventId: paused.value.id })) {
    statuses.push(fromJson(WatchSessionResponseSchema, e.data).item.value.toStatus);
  }
  assert.deepEqual(statuses, [SessionStatus.ACTIVE, SessionStatus.CANCELLED], "each missed event once; ends after the terminal one");

  const refused = await watchEvents(`${baseUrl}/api/mentorship/sessions/${crypto.randomUUID()}:watch`, { token })
    .next()
    .catch((e) => e);
  assert.ok(refused instanceof StatusError, String(refused));
  assert.equal(refused.httpStatus, 404);
  assert.equal(refused.status.code, Code.NotFound);
});
