"use strict";
// The Gmail test double: hoodiecrow-imap (npm) with Gmail's plugins plus our own
// (plugins/*.js) for what hoodiecrow lacks. Started by tests/support/gmail_double.py with
// one argument, a JSON config file: {storage, users, port, plugins?}. Prints
// "LISTENING <port>" once it accepts connections.
const fs = require("fs");
const path = require("path");
const hoodiecrow = require("hoodiecrow-imap");

const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const own = (name) => require(path.join(__dirname, "plugins", name));

const plugins = config.plugins || [
  "ID", "ENABLE", "CONDSTORE", "IDLE", "NAMESPACE", "UNSELECT", "UIDPLUS", "MOVE",
  "SPECIAL-USE", "X-GM-EXT-1", "XTOYBIRD", "LITERALPLUS",
];
const server = hoodiecrow({
  plugins: plugins.concat([
    own("xoauth2.js"), own("gmail_labels.js"), own("partial_fetch.js"), own("stats.js"),
  ]),
  storage: config.storage,
  users: config.users,
  id: { name: "piper-gmail-double", version: "1" },
  piper: { sideEffects: !!config.sideEffects },
});
server.listen(config.port || 0, "127.0.0.1", function () {
  process.stdout.write("LISTENING " + server.server.address().port + "\n");
});
process.on("SIGTERM", () => process.exit(0));
