"use strict";
// hoodiecrow's BODY[...]<start.len> handler pops the length off the request it was given, so
// in one FETCH of many messages every body after the first short one comes back empty. Each
// message gets the request as the client sent it. Counts the body bytes sent (the
// download budget Gmail meters).
const builtin = require("hoodiecrow-imap/lib/commands/handlers/fetch");

module.exports = function (server) {
  function fresh(handler) {
    return function (connection, message, query) {
      if (query && query.partial) {
        if (!query.piperPartial) query.piperPartial = query.partial.slice();
        query.partial = query.piperPartial.slice();
      }
      const value = handler(connection, message, query);
      // RFC 3501: the answer names only the origin, BODY[]<0>, whatever the length.
      if (query && query.partial && query.partial.length === 2) query.partial.pop();
      if (value && value.type === "LITERAL") {
        server.piperStats.bytesSent += Buffer.byteLength(String(value.value));
      }
      return value;
    };
  }
  server.fetchHandlers.BODY = fresh(builtin.BODY);
  server.fetchHandlers["BODY.PEEK"] = fresh(builtin.BODY);
  server.fetchHandlers.RFC822 = fresh(builtin.RFC822);
};
