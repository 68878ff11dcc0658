"use strict";
// Gmail's labels belong to the message, not to a folder copy: every copy of one X-GM-MSGID
// (INBOX, [Gmail]/All Mail, label folders) shares one label list, so a label STOREd through
// INBOX shows in All Mail too. Adds X-GM-THRID (seeded, else the message's X-GM-MSGID) and
// SEARCH X-GM-LABELS / X-GM-THRID, and drops the "\All" label hoodiecrow invents for All Mail.
// Still unlike Gmail: removing \Inbox does not take the message out of INBOX (no side effects
// on folders), so tests assert on labels.
module.exports = function (server) {
  const shared = {}; // X-GM-MSGID -> the one label array
  server.registerCapability("X-GM-EXT-1"); // hoodiecrow's plugin forgets to announce itself

  server.messageHandlers.push(function (connection, message) {
    const own = (message["X-GM-LABELS"] || []).filter((l) => l !== "\\All");
    const id = message["X-GM-MSGID"];
    if (!shared[id]) {
      shared[id] = own;
    } else {
      own.forEach((l) => server.ensureFlag(shared[id], l));
    }
    message["X-GM-LABELS"] = shared[id];
    if (!message["X-GM-THRID"]) message["X-GM-THRID"] = id;
  });

  server.fetchHandlers["X-GM-THRID"] = (c, message) => ({ type: "ATOM", value: message["X-GM-THRID"] });
  server.searchHandlers["X-GM-THRID"] = (c, message, seq, v) => message["X-GM-THRID"] === v;
  server.searchHandlers["X-GM-LABELS"] = (c, message, seq, v) =>
    message["X-GM-LABELS"].some((l) => l.toLowerCase() === String(v).toLowerCase());

  function labelUpdate(connection, parsed, data, index, message) {
    const resp = [{ type: "ATOM", value: "X-GM-LABELS" },
      message["X-GM-LABELS"].map((l) => ({ type: "STRING", value: l }))];
    if ((parsed.command || "").toUpperCase() === "UID STORE") {
      resp.push({ type: "ATOM", value: "UID" }, message.uid);
    }
    connection.send({ tag: "*", attributes: [index, { type: "ATOM", value: "FETCH" }, resp] },
      "FLAG UPDATE", parsed, data, message);
  }
  const name = (f) => String((f && f.value) || f);
  const ops = {
    "X-GM-LABELS": (m, flags) => { m.splice(0, m.length); flags.forEach((f) => server.ensureFlag(m, name(f))); },
    "+X-GM-LABELS": (m, flags) => flags.forEach((f) => server.ensureFlag(m, name(f))),
    "-X-GM-LABELS": (m, flags) => flags.forEach((f) => server.removeFlag(m, name(f))),
  };
  Object.keys(ops).forEach(function (key) {
    server.storeHandlers[key] = function (connection, message, flags, index, parsed, data) {
      ops[key](message["X-GM-LABELS"], flags);
      server.piperStats.labelStores += 1;
      labelUpdate(connection, parsed, data, index, message);
    };
    server.storeHandlers[key + ".SILENT"] = function (connection, message, flags) {
      ops[key](message["X-GM-LABELS"], flags);
      server.piperStats.labelStores += 1;
    };
  });
};
