// keyturn console: refresh the receipts feed every 2 seconds from /feed.json.
// Builds DOM nodes with textContent only (never innerHTML): feed text is untrusted.
(function () {
  "use strict";
  var list = document.getElementById("feed-lines");
  if (!list) { return; }
  var url = list.getAttribute("data-feed-url") || "/feed.json";
  var checkpoint = document.getElementById("feed-checkpoint");
  var shown = -1;

  function newest() {
    var items = list.querySelectorAll("li[data-index]");
    return items.length ? Number(items[items.length - 1].getAttribute("data-index")) : -1;
  }

  function render(data) {
    var lines = (data.lines || []).slice(-40);
    var last = lines.length ? lines[lines.length - 1].index : -1;
    if (last !== shown) {
      shown = last;
      while (list.firstChild) { list.removeChild(list.firstChild); }
      lines.forEach(function (line) {
        var li = document.createElement("li");
        li.setAttribute("data-index", String(line.index));
        var code = document.createElement("code");
        code.textContent = line.text;
        if (line.request_id) {
          var a = document.createElement("a");
          a.href = "/requests/" + encodeURIComponent(line.request_id);
          a.appendChild(code);
          li.appendChild(a);
        } else {
          li.appendChild(code);
        }
        list.appendChild(li);
      });
    }
    if (checkpoint && data.checkpoint) {
      checkpoint.textContent = "Latest signed checkpoint: ";
      var c = document.createElement("code");
      c.textContent = data.checkpoint.line;
      checkpoint.appendChild(c);
    }
  }

  function poll() {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { render(data); } })
      .catch(function () { /* the next poll tries again */ })
      .then(function () { window.setTimeout(poll, 2000); });
  }

  shown = newest();
  window.setTimeout(poll, 2000);
})();
