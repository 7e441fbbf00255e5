// Saves the private key shown on this page as a file, from the page itself: the key is never
// requested from the console again (it was delivered once, in the page's own response).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button[data-download-from]").forEach(function (button) {
    button.addEventListener("click", function () {
      var source = document.getElementById(button.dataset.downloadFrom);
      var blob = new Blob([source.value], { type: "application/x-pem-file" });
      var link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = button.dataset.filename;
      document.body.appendChild(link);
      link.click();
      link.remove();
      setTimeout(function () { URL.revokeObjectURL(link.href); }, 1000);
    });
  });
});
