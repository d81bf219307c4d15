// A Server-Sent Events reader for the REST API's watches, on fetch: the
// token goes in the Authorization header (EventSource cannot set headers,
// and tokens never go in query strings). Works in browsers and Node 20.

/** A refused watch (its HTTP status) or a failure after it started. */
export class StatusError extends Error {
  constructor(httpStatus, status) {
    super(status?.message ?? `HTTP ${httpStatus}`);
    this.name = "StatusError";
    this.httpStatus = httpStatus;
    this.status = status;
  }
}

/**
 * Yields each event of the stream at `url` as `{ id, event, data }`, `data`
 * parsed from JSON, until the server ends it (after a session's terminal
 * event) or `signal` aborts. Pass the last `id` back as `lastEventId` to
 * resume after it, on any replica. Comment lines (keep-alives) are skipped;
 * an `event: error` throws a StatusError with the google.rpc.Status JSON.
 */
export async function* watchEvents(url, { token, lastEventId, signal, fetch: fetchFn = globalThis.fetch } = {}) {
  const headers = { accept: "text/event-stream" };
  if (token) headers.authorization = `Bearer ${token}`;
  if (lastEventId) headers["last-event-id"] = lastEventId;
  const response = await fetchFn(url, { headers, signal });
  if (!response.ok) {
    const body = await response.json().catch(() => undefined);
    throw new StatusError(response.status, body);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let id;
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line === "" || line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let text = colon < 0 ? "" : line.slice(colon + 1);
          if (text.startsWith(" ")) text = text.slice(1);
          if (field === "id") id = text;
          else if (field === "event") event = text;
          else if (field === "data") data.push(text);
        }
        if (data.length === 0) continue;
        const parsed = JSON.parse(data.join("\n"));
        if (event === "error") throw new StatusError(200, parsed);
        yield { id, event, data: parsed };
      }
    }
  } finally {
    reader.releaseLock();
  }
}
