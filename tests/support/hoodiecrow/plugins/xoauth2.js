"use strict";
// XOAUTH2 as Gmail speaks it: with or without SASL-IR (imapclient never sends an initial
// response; hoodiecrow's own plugin insists on one). A user's valid access tokens are
// users[name].xoauth2.accessTokens (a list) and can be changed at run time with
// `XPIPER GRANT user token` / `XPIPER REVOKE user` (see stats.js).
module.exports = function (server) {
  server.registerCapability("AUTH=XOAUTH2", (c) => c.state === "Not Authenticated");

  function reply(connection, parsed, data, command, text) {
    connection.send({ tag: parsed.tag, command: command, attributes: [{ type: "TEXT", value: text }] },
      "AUTHENTICATE XOAUTH2", parsed, data);
  }

  function check(connection, parsed, data, b64) {
    const parts = Buffer.from(b64 || "", "base64").toString("utf-8").split("\x01");
    const user = (parts[0] || "").replace(/^user=/, "");
    const token = (parts[1] || "").replace(/^auth=Bearer /, "");
    const entry = server.users[user];
    const tokens = (entry && entry.xoauth2 && entry.xoauth2.accessTokens) || [];
    server.piperStats.authAttempts.push({ user: user, ok: tokens.indexOf(token) >= 0 });
    if (parts.length === 4 && user && token && tokens.indexOf(token) >= 0) {
      connection.state = "Authenticated";
      return reply(connection, parsed, data, "OK", "user logged in");
    }
    // Gmail answers a bad token with a JSON challenge, waits for an empty line, then NO.
    const challenge = Buffer.from(JSON.stringify({
      status: "400", schemes: "Bearer", scope: "https://mail.google.com/",
    })).toString("base64");
    connection.inputHandler = function () {
      connection.inputHandler = false;
      reply(connection, parsed, data, "NO", "[AUTHENTICATIONFAILED] Invalid credentials (Failure)");
    };
    connection.socket.write("+ " + challenge + "\r\n");
  }

  server.setCommandHandler("AUTHENTICATE XOAUTH2", function (connection, parsed, data, callback) {
    if (connection.state !== "Not Authenticated") {
      reply(connection, parsed, data, "BAD", "Already authenticated");
      return callback();
    }
    const attrs = parsed.attributes || [];
    if (attrs.length === 1 && attrs[0] && attrs[0].value) {
      check(connection, parsed, data, attrs[0].value);
      return callback();
    }
    connection.inputHandler = function (line) {
      connection.inputHandler = false;
      check(connection, parsed, data, String(line).trim());
    };
    connection.socket.write("+ \r\n");
    return callback();
  });
};
