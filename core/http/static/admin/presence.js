// /admin: redraw the WebSocket presence table from /admin/presence.json every few seconds.
// The page is complete without it (the server renders the rooms as they are at load). Text is
// set with textContent only: room names and usernames are never read as HTML.
(function () {
  "use strict";
  var section = document.getElementById("presence");
  var body = document.getElementById("presence-rooms");
  if (!section || !body || !window.fetch) {
    return;
  }
  var url = section.getAttribute("data-url");
  var every = 1000 * (parseFloat(section.getAttribute("data-poll-s")) || 3);
  var summary = document.getElementById("presence-summary");
  var updated = document.getElementById("presence-updated");
  var problem = document.getElementById("presence-error");

  function cell(row, text, className) {
    var td = document.createElement("td");
    td.textContent = text;
    if (className) {
      td.className = className;
    }
    row.appendChild(td);
    return td;
  }

  function who(member) {
    return member.user_id === null ? member.username + " (API key)" : member.username + " #" + member.user_id;
  }

  function draw(data) {
    var rows = [];
    data.rooms.forEach(function (room) {
      var row = document.createElement("tr");
      row.setAttribute("data-room", room.room);
      cell(row, room.room, "mono");
      cell(row, String(room.count), "count");
      cell(row, room.members.map(who).join(", "), "members");
      cell(row, room.private ? "private" : "public");
      cell(row, room.max_members === null ? "" : String(room.max_members));
      rows.push(row);
    });
    if (!rows.length) {
      var none = document.createElement("tr");
      none.id = "no-rooms";
      cell(none, "No rooms.", "muted").colSpan = 5;
      rows.push(none);
    }
    body.replaceChildren.apply(body, rows);
    summary.textContent = data.total_rooms + (data.total_rooms === 1 ? " room" : " rooms") +
      (data.total_rooms > data.rooms.length ? " (the first " + data.rooms.length + " shown)" : "");
    say(data.error);
  }

  function say(message) {
    problem.textContent = message || "";
    problem.hidden = !message;
  }

  function poll() {
    if (document.hidden) {  // a background tab asks nothing
      setTimeout(poll, every);
      return;
    }
    fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 401) {
          throw new Error("signed out");
        }
        return response.json().then(function (data) {
          if (!response.ok) {
            say("Presence could not be read: " + (data.error ? data.error.message : response.status));
            return;
          }
          draw(data);
          updated.textContent = "updated " + new Date().toLocaleTimeString();
        });
      })
      .then(function () {
        setTimeout(poll, every);
      }, function (error) {
        if (error.message === "signed out") {
          say("Your session ended: reload the page to sign in again.");
          return;  // stop asking
        }
        say("Presence could not be read (" + error.message + "); trying again.");
        setTimeout(poll, every);
      });
  }

  setTimeout(poll, every);
})();
