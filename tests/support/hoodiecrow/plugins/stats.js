"use strict";
// What tests ask of the double, without logging in: `XPIPER STATS` answers
// `* XPIPER {json}` with the open and peak connection counts, body bytes sent, label STOREs
// and XOAUTH2 attempts; `XPIPER GRANT user token` makes a token valid, `XPIPER REVOKE user`
// invalidates all of a user's tokens; `XPIPER LIMIT n` refuses connections beyond n open
// (Gmail's "Too many simultaneous connections"); `XPIPER SIDEEFFECTS ON|OFF` switches Gmail's
// folder side effects of label changes (gmail_labels.js); `XPIPER OVERQUOTA n` makes the next n
// UID FETCH commands fail as Gmail does past its daily bandwidth ("[OVERQUOTA] Account exceeded
// command or bandwidth limits").
module.exports = function (server) {
  server.piperStats = { open: 0, peak: 0, total: 0, refused: 0, bytesSent: 0, labelStores: 0, authAttempts: [] };
  let limit = 0;
  let overquota = 0; // the next n UID FETCH commands answer as Gmail past its bandwidth limit

  const uidFetch = server.getCommandHandler("UID FETCH");
  server.setCommandHandler("UID FETCH", function (connection, parsed, data, callback) {
    if (overquota > 0) {
      overquota -= 1;
      connection.send({ tag: parsed.tag, command: "NO", attributes: [{ type: "TEXT",
        value: "[OVERQUOTA] Account exceeded command or bandwidth limits. (Failure)" }] },
      "UID FETCH FAILED", parsed, data);
      return callback();
    }
    return uidFetch(connection, parsed, data, callback);
  });

  server.connectionHandlers.push(function (connection) {
    const s = server.piperStats;
    if (limit && s.open >= limit) {
      s.refused += 1;
      connection.socket.write("* BYE [ALERT] Too many simultaneous connections. (Failure)\r\n");
      connection.socket.end();
      return;
    }
    s.open += 1; s.total += 1; s.peak = Math.max(s.peak, s.open);
    let closed = false;
    connection.socket.on("close", function () {
      if (!closed) { closed = true; s.open -= 1; }
    });
  });

  server.setCommandHandler("XPIPER", function (connection, parsed, data, callback) {
    const args = (parsed.attributes || []).map((a) => String(a.value));
    const verb = (args[0] || "").toUpperCase();
    const done = (text) => connection.send({ tag: parsed.tag, command: "OK", attributes: [{ type: "TEXT", value: text }] }, "XPIPER", parsed, data);
    if (verb === "STATS") {
      // The stats connection itself is not counted as one of the product's.
      const s = Object.assign({}, server.piperStats, { open: server.piperStats.open - 1 });
      connection.send({ tag: "*", attributes: [{ type: "ATOM", value: "XPIPER" }, { type: "STRING", value: JSON.stringify(s) }] }, "XPIPER", parsed, data);
      done("stats");
    } else if (verb === "GRANT") {
      const u = server.users[args[1]] = server.users[args[1]] || { password: "" };
      u.xoauth2 = u.xoauth2 || { accessTokens: [] };
      u.xoauth2.accessTokens = (u.xoauth2.accessTokens || []).concat([args[2]]);
      done("granted");
    } else if (verb === "REVOKE") {
      const u = server.users[args[1]];
      if (u && u.xoauth2) u.xoauth2.accessTokens = [];
      done("revoked");
    } else if (verb === "OVERQUOTA") {
      overquota = parseInt(args[1], 10) || 0;
      done("overquota " + overquota);
    } else if (verb === "SIDEEFFECTS") {
      server.piperGmail.set((args[1] || "").toUpperCase() === "ON");
      done("side effects " + (server.piperGmail.sideEffects ? "on" : "off"));
    } else if (verb === "LIMIT") {
      limit = parseInt(args[1], 10) || 0;
      done("limit");
    } else {
      connection.send({ tag: parsed.tag, command: "BAD", attributes: [{ type: "TEXT", value: "XPIPER STATS|GRANT|REVOKE|LIMIT|SIDEEFFECTS|OVERQUOTA" }] }, "XPIPER", parsed, data);
    }
    return callback();
  });
};
