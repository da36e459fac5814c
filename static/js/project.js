/* The project page, live: when someone uploads a notebook or a dataset version, offer a reload.
 * The page itself is the record; live updates are optional. The socket's path comes from the
 * page (data-ws-path on #live-status), so no script is inline (the site's CSP forbids it). */
(function () {
  "use strict";

  const status = document.getElementById("live-status");
  if (!status || !status.dataset.wsPath || !("WebSocket" in window)) return;
  const proto = location.protocol === "https:" ? "wss" : "ws";
  try {
    const socket = new WebSocket(`${proto}://${location.host}${status.dataset.wsPath}`);
    socket.onmessage = (message) => {
      const event = JSON.parse(message.data);
      const what = event.type === "notebook.version_created"
        ? `${event.path} v${event.version}` : `dataset ${event.dataset} v${event.version}`;
      status.textContent = `New: ${what}. Reload to see it.`;
      status.hidden = false;
    };
  } catch (e) { /* live updates are optional */ }
})();
