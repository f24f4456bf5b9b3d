// Profile Studio: placeholder. The WebUI injects every file in javascript/ into the page;
// the studio's front-end code arrives in coming versions.
