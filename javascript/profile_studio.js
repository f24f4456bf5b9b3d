// Profile Studio: keeps the tab's job status moving. While the status box shows a queued or running
// job, it clicks the tab's hidden poll button every 2 s. (gradio 3's own `every` timer, used by A1111,
// re-sends the inputs of its first call, so it never sees a job started later.) The WebUI loads this
// file into its page; the standalone server injects the same file on page load. Installed once.
(() => {
  if (window.profileStudioPoller) return;
  const root = () => (typeof gradioApp === "function" ? gradioApp() : document);
  window.profileStudioPoller = setInterval(() => {
    const app = root();
    const status = app.querySelector("#profile_studio_status");
    const poll = app.querySelector("#profile_studio_poll");
    if (!status || !poll || document.visibilityState !== "visible") return;
    if (/ job \w+: (queued|running)/.test(status.innerText)) poll.click();
  }, 2000);
})();
