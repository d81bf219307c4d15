// The booking → session flow and a live watch, type-checked by
// `npm run typecheck` (the README shows the same code).
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  BookingService,
  DirectoryService,
  SessionService,
  SessionStatus,
} from "@mentorship/client";

export async function flow(baseUrl: string, token: string): Promise<SessionStatus> {
  const auth: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const transport = createGrpcTransport({ baseUrl, interceptors: [auth] });
  const directory = createClient(DirectoryService, transport);
  const bookings = createClient(BookingService, transport);
  const sessions = createClient(SessionService, transport);

  const { mentee } = await directory.upsertMentee({ mentee: { id: crypto.randomUUID(), displayName: "Ada" } });
  const { mentor } = await directory.upsertMentor({
    mentor: { userId: crypto.randomUUID(), displayName: "Grace", timezone: "UTC", acceptingSessions: true, skillAreas: ["rust"] },
  });
  const { listing } = await directory.upsertListing({
    listing: { mentorId: mentor!.id, title: "Code review", skillArea: "rust" },
  });
  const start = new Date(Date.now() + 7 * 24 * 3600 * 1000);
  const { booking } = await bookings.createBooking({
    listingId: listing!.id,
    menteeId: mentee!.id,
    startTime: timestampFromDate(start),
    endTime: timestampFromDate(new Date(start.getTime() + 3600 * 1000)),
    requestId: crypto.randomUUID(),
  });
  const { session } = await bookings.acceptBooking({ bookingId: booking!.id });
  await sessions.startSession({ sessionId: session!.id });

  // Watch live: the session first, then each event as it commits. The
  // change is made once the session has arrived, so the stream is open.
  const controller = new AbortController();
  const items = sessions.watchSession({ sessionId: session!.id }, { signal: controller.signal })[Symbol.asyncIterator]();
  const first = await items.next();
  if (first.done || first.value.item.case !== "session") return SessionStatus.UNSPECIFIED;
  await sessions.pauseSession({ sessionId: session!.id, reason: "lunch" });
  const next = await items.next();
  controller.abort();
  return !next.done && next.value.item.case === "event" ? next.value.item.value.toStatus : SessionStatus.UNSPECIFIED;
}
