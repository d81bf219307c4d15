// The mentorship API's generated messages and services, in one import.
// Call a service with connect: createClient(SessionService, transport).
export * from "./gen/mentorship/v1/errors_pb.js";
export * from "./gen/mentorship/v1/resources_pb.js";
export * from "./gen/mentorship/v1/directory_service_pb.js";
export * from "./gen/mentorship/v1/booking_service_pb.js";
export * from "./gen/mentorship/v1/session_service_pb.js";
export * from "./gen/mentorship/v1/webhook_service_pb.js";
export * from "./gen/google/rpc/error_details_pb.js";
export * from "./gen/google/rpc/status_pb.js";
export * from "./sse.js";
