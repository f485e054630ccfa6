// Poll /version so an open page shows the switch from one color to the other.
(function () {
  "use strict";
  function refresh() {
    fetch("/version", { cache: "no-store" })
      .then(function (r) { return r.json(); })
      .then(function (d) {
        document.getElementById("version").textContent = d.version;
        document.getElementById("color").textContent = d.color || "(unset)";
        document.body.className = "color-" + (d.color || "none");
      })
      .catch(function () {});
  }
  setInterval(refresh, 2000);
})();
