/* Renders every [data-plotly] element with the locally served plotly.js; no inline script,
   so the page works under a strict Content-Security-Policy. */
(function () {
  "use strict";

  function render(element) {
    var figure;
    try {
      figure = JSON.parse(element.getAttribute("data-plotly"));
    } catch (error) {
      element.textContent = "This chart could not be read.";
      return;
    }
    var layout = figure.layout || {};
    layout.autosize = true;
    window.Plotly.newPlot(element, figure.data || [], layout, {
      responsive: true,
      displaylogo: false,
      modeBarButtonsToRemove: ["select2d", "lasso2d"],
    });
  }

  function start() {
    if (window.Plotly) {
      document.querySelectorAll("[data-plotly]").forEach(render);
    }
    document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () {
        select.form.submit();
      });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
