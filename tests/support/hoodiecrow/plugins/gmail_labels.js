"use strict";
// Gmail's labels and flags belong to the message, not to a folder copy: every copy of one
// X-GM-MSGID (INBOX, [Gmail]/All Mail, label folders) shares one label list and one set of
// flags, so a change STOREd through one copy shows in every other one, and moves the MODSEQ
// (and the folder's HIGHESTMODSEQ) of every copy, as Gmail's CONDSTORE does for label
// changes. Adds X-GM-THRID (seeded, else the message's X-GM-MSGID) and SEARCH X-GM-LABELS /
// X-GM-THRID, and drops the "\All" label hoodiecrow invents for All Mail.
//
// Side effects on folders (Gmail's, off unless the config's `piper.sideEffects` or
// `XPIPER SIDEEFFECTS ON` turns them on): removing \Inbox or a user label expunges the copy
// in INBOX or in that label's folder; adding one appends a copy there under a new UID
// (creating the label's folder when missing). Off, labels change and folders do not, so
// tests assert on labels.
const builtinStore = require("hoodiecrow-imap/lib/commands/handlers/store");

module.exports = function (server) {
  const shared = {}; // X-GM-MSGID -> the one label array
  const copies = {}; // X-GM-MSGID -> [{message, mailbox}]
  const options = server.options.piper || {};
  server.piperGmail = { sideEffects: !!options.sideEffects };
  server.registerCapability("X-GM-EXT-1"); // hoodiecrow's plugin forgets to announce itself

  server.messageHandlers.push(function (_server, message, mailbox) {
    const own = (message["X-GM-LABELS"] || []).filter((l) => l !== "\\All");
    const id = message["X-GM-MSGID"];
    if (!shared[id]) {
      shared[id] = own;
    } else {
      own.forEach((l) => server.ensureFlag(shared[id], l));
    }
    message["X-GM-LABELS"] = shared[id];
    if (!message["X-GM-THRID"]) message["X-GM-THRID"] = id;
    (copies[id] = copies[id] || []).push({ message: message, mailbox: mailbox });
  });

  const live = (id) => (copies[id] || []).filter((c) => !c.message.ghost && c.mailbox.messages.indexOf(c.message) >= 0);

  function touch(id, flags) {
    live(id).forEach(function (c) {
      if (flags) {
        const keep = c.message.flags.filter((f) => f === "\\Recent" || f === "\\Deleted");
        c.message.flags = keep.concat(flags.filter((f) => f !== "\\Recent" && f !== "\\Deleted"));
      }
      c.mailbox.HIGHESTMODSEQ = (c.mailbox.HIGHESTMODSEQ || 0) + 1;
      c.message.MODSEQ = c.mailbox.HIGHESTMODSEQ;
    });
  }

  server.fetchHandlers["X-GM-THRID"] = (c, message) => ({ type: "ATOM", value: message["X-GM-THRID"] });
  server.searchHandlers["X-GM-THRID"] = (c, message, seq, v) => message["X-GM-THRID"] === v;
  server.searchHandlers["X-GM-LABELS"] = (c, message, seq, v) =>
    message["X-GM-LABELS"].some((l) => l.toLowerCase() === String(v).toLowerCase());

  function folderOf(label) {
    if (label.toLowerCase() === "\\inbox") return "INBOX";
    return label.charAt(0) === "\\" ? null : label;
  }

  function sideEffects(connection, message, before) {
    if (!server.piperGmail.sideEffects) return;
    const id = message["X-GM-MSGID"];
    const after = shared[id];
    const removed = before.filter((l) => after.indexOf(l) < 0);
    const added = after.filter((l) => before.indexOf(l) < 0);
    setImmediate(function () {
      removed.forEach(function (label) {
        const path = folderOf(label);
        const mailbox = path && server.getMailbox(path);
        if (!mailbox) return;
        const gone = live(id).filter((c) => c.mailbox === mailbox).map((c) => c.message);
        if (gone.length) connection.expungeSpecificMessages(mailbox, gone, false, false);
      });
      added.forEach(function (label) {
        const path = folderOf(label);
        if (!path) return;
        let mailbox = server.getMailbox(path);
        if (!mailbox) {
          server.createMailbox(path);
          mailbox = server.getMailbox(path);
        }
        if (!mailbox || live(id).some((c) => c.mailbox === mailbox)) return;
        const copy = {
          raw: message.raw,
          flags: message.flags.filter((f) => f !== "\\Recent" && f !== "\\Deleted"),
          internaldate: message.internaldate,
          "X-GM-MSGID": id,
          "X-GM-THRID": message["X-GM-THRID"],
          "X-GM-LABELS": shared[id].slice(),
        };
        mailbox.messages.push(copy);
        server.processMessage(copy, mailbox);
        server.notify({ tag: "*", attributes: [mailbox.messages.length, { type: "ATOM", value: "EXISTS" }] }, mailbox);
      });
    });
  }

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
    function apply(connection, message, flags) {
      const before = message["X-GM-LABELS"].slice();
      ops[key](message["X-GM-LABELS"], [].concat(flags || []));
      server.piperStats.labelStores += 1;
      touch(message["X-GM-MSGID"], null);
      sideEffects(connection, message, before);
    }
    server.storeHandlers[key] = function (connection, message, flags, index, parsed, data) {
      apply(connection, message, flags);
      labelUpdate(connection, parsed, data, index, message);
    };
    server.storeHandlers[key + ".SILENT"] = function (connection, message, flags) {
      apply(connection, message, flags);
    };
  });

  // Flags are the message's too: a flag STORE through one copy shows in every copy.
  ["FLAGS", "+FLAGS", "-FLAGS"].forEach(function (key) {
    [key, key + ".SILENT"].forEach(function (k) {
      const builtin = server.storeHandlers[k] || builtinStore[k];
      if (!builtin) return;
      server.storeHandlers[k] = function (connection, message) {
        const result = builtin.apply(this, arguments);
        touch(message["X-GM-MSGID"], message.flags.slice());
        return result;
      };
    });
  });

  server.piperGmail.set = function (on) { server.piperGmail.sideEffects = !!on; };
};
