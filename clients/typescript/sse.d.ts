/** The google.rpc.Status JSON of a failed call. */
export interface StatusJson {
  code: number;
  message: string;
  details?: Array<{ "@type": string; [field: string]: unknown }>;
}

/** A refused watch (its HTTP status) or a failure after it started. */
export declare class StatusError extends Error {
  readonly httpStatus: number;
  readonly status: StatusJson | undefined;
  constructor(httpStatus: number, status: StatusJson | undefined);
}

/** One event: its resume position, its name, and its JSON data. */
export interface ServerEvent<T = unknown> {
  id: string | undefined;
  event: string;
  data: T;
}

export interface WatchOptions {
  /** The bearer token, sent in the Authorization header. */
  token?: string;
  /** Resume after this event's id. */
  lastEventId?: string;
  signal?: AbortSignal;
  fetch?: typeof globalThis.fetch;
}

/** Reads a Server-Sent Events watch of the REST API with fetch. */
export declare function watchEvents<T = unknown>(
  url: string,
  options?: WatchOptions,
): AsyncGenerator<ServerEvent<T>, void, undefined>;
