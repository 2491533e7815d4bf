// Building blocks exported for the SDK's own unit tests. Not part of the API: they may change.
export { LineSplitter, ndjson, kMaxLineChars } from "./ndjson.js";
export { parseEndpoint, FetchTransport, NodeTransport, readableChunks, toReadableStream, type Endpoint } from "./transport.js";
export { errorFromResponse, errorFromStreamEvent } from "./errors.js";
export { execBody } from "./controller.js";
export { camelize, mapLimit } from "./util.js";
