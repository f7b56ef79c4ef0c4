// Progressive enhancements of the marketer UI. Every page works without this module;
// it is loaded as an external ES module because the Content-Security-Policy forbids
// inline scripts and inline event handlers.

/** Links with data-confirm="<dialog id>" open that <dialog> instead of the confirm page. */
function enhanceConfirmations(root) {
  for (const link of root.querySelectorAll("a[data-confirm]")) {
    const dialog = document.getElementById(link.dataset.confirm);
    if (!(dialog instanceof HTMLDialogElement) || link.dataset.enhanced) continue;
    link.dataset.enhanced = "true";
    link.addEventListener("click", (event) => {
      event.preventDefault();
      dialog.showModal();
    });
  }
}

/** Read-only secrets select themselves on focus so they copy in one keystroke. */
function enhanceSecrets(root) {
  for (const input of root.querySelectorAll("input[data-select-on-focus]")) {
    if (input.dataset.enhanced) continue;
    input.dataset.enhanced = "true";
    input.addEventListener("focus", () => input.select());
  }
}

const palette = ["#1d4ed8", "#b45309", "#15803d", "#7e22ce", "#be123c", "#0e7490"];

/** <canvas data-chart='{"type", "labels", "datasets": [{label, data}], "yTitle"}'>. */
function renderCharts(root) {
  const Chart = window.Chart;
  if (!Chart) return;
  for (const canvas of root.querySelectorAll("canvas[data-chart]")) {
    if (canvas.dataset.rendered) continue;
    const spec = JSON.parse(canvas.dataset.chart);
    new Chart(canvas, {
      type: spec.type,
      data: {
        labels: spec.labels,
        datasets: spec.datasets.map((dataset, index) => ({
          ...dataset,
          backgroundColor: palette[index % palette.length],
          borderColor: palette[index % palette.length],
        })),
      },
      options: {
        responsive: true,
        animation: window.matchMedia("(prefers-reduced-motion: reduce)").matches ? false : undefined,
        scales: { y: { beginAtZero: true, title: { display: Boolean(spec.yTitle), text: spec.yTitle } } },
        plugins: { legend: { position: "bottom" } },
      },
    });
    canvas.dataset.rendered = "true";
  }
}

/** A form that came back with errors: move focus to the summary so it is read out first. */
function focusErrorSummary(root) {
  const summary = root.querySelector(".error-summary");
  if (summary instanceof HTMLElement) summary.focus();
}

function enhance(root) {
  enhanceConfirmations(root);
  enhanceSecrets(root);
  renderCharts(root);
}

enhance(document);
focusErrorSummary(document);
// Content that htmx swaps in gets the same treatment.
document.body.addEventListener("htmx:load", (event) => enhance(event.target));

// --- Campaign report and channel economics charts -----------------------------------
// (pages web/ui/pages/reports.py and economics.py). A chart is
// <canvas data-report-chart='JSON'>, the JSON being
//   {"kind": "interval", "labels", "estimate", "low", "high", "colours", "unit", "axisTitle"}
//   {"kind": "lines" | "bars", "labels", "series": [{label, data, colour?, dashed?}],
//    "unit", "yTitle", "stacked"?}
// An attribute rather than a <script type="application/json"> block: htmx drops script
// elements from swapped content (allowScriptTags is off), and the live report is swapped.
// The canvases carry no id, so htmx's settling never copies the old canvas's inline style
// (which chart.js writes) onto the new one, which the CSP would refuse.

const reportPalette = ["#1d4ed8", "#b45309", "#15803d", "#7e22ce", "#be123c", "#0e7490"];

function withUnit(value, unit) {
  if (value === null || value === undefined) return "–";
  const number = Number(value).toLocaleString(undefined, { maximumFractionDigits: 2 });
  if (!unit) return number;
  return unit === "%" || unit.startsWith(" ") ? `${number}${unit}` : `${number} ${unit}`;
}

function motion() {
  return window.matchMedia("(prefers-reduced-motion: reduce)").matches ? false : undefined;
}

/** Horizontal interval chart: a floating bar from low to high and a mark at the estimate. */
function intervalConfig(spec) {
  const colours = spec.colours || spec.labels.map((_, i) => reportPalette[i % reportPalette.length]);
  return {
    type: "bar",
    data: {
      labels: spec.labels,
      datasets: [
        {
          label: "interval",
          data: spec.low.map((low, i) => [low, spec.high[i]]),
          backgroundColor: colours.map((colour) => `${colour}55`),
          borderColor: colours,
          borderWidth: 1,
          barPercentage: 0.5,
          order: 2,
        },
        {
          type: "scatter",
          label: "estimate",
          data: spec.estimate.map((x, i) => ({ x, y: spec.labels[i] })),
          backgroundColor: colours,
          borderColor: "#1a1f29",
          pointStyle: "rectRot",
          pointRadius: 6,
          order: 1,
        },
      ],
    },
    options: {
      indexAxis: "y",
      responsive: true,
      maintainAspectRatio: false,
      animation: motion(),
      scales: {
        x: { title: { display: Boolean(spec.axisTitle), text: spec.axisTitle },
             ticks: { callback: (value) => withUnit(value, spec.unit) } },
        y: { type: "category", labels: spec.labels },
      },
      plugins: {
        legend: { display: false },
        tooltip: {
          callbacks: {
            label: (item) => {
              const i = item.dataIndex;
              return `${withUnit(spec.estimate[i], spec.unit)} (${withUnit(spec.low[i], spec.unit)} to ${withUnit(spec.high[i], spec.unit)})`;
            },
          },
        },
      },
    },
  };
}

/** Lines over days or grouped / stacked bars over categories. */
function seriesConfig(spec) {
  const line = spec.kind === "lines";
  return {
    type: line ? "line" : "bar",
    data: {
      labels: spec.labels,
      datasets: spec.series.map((series, index) => {
        const colour = series.colour || reportPalette[index % reportPalette.length];
        return {
          label: series.label,
          data: series.data,
          borderColor: colour,
          backgroundColor: colour,
          borderDash: series.dashed ? [6, 4] : undefined,
          pointRadius: line ? 0 : undefined,
          spanGaps: true,
          tension: 0,
        };
      }),
    },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      animation: motion(),
      interaction: { mode: "index", intersect: false },
      scales: {
        x: { stacked: Boolean(spec.stacked), ticks: { maxTicksLimit: line ? 8 : undefined } },
        y: {
          stacked: Boolean(spec.stacked),
          beginAtZero: true,
          title: { display: Boolean(spec.yTitle), text: spec.yTitle },
          ticks: { callback: (value) => withUnit(value, spec.unit) },
        },
      },
      plugins: {
        legend: { position: "bottom" },
        tooltip: { callbacks: { label: (item) => `${item.dataset.label}: ${withUnit(item.raw, spec.unit)}` } },
      },
    },
  };
}

function renderReportCharts(root) {
  const Chart = window.Chart;
  if (!Chart) return;
  for (const canvas of root.querySelectorAll("canvas[data-report-chart]")) {
    if (canvas.dataset.rendered) continue;
    const spec = JSON.parse(canvas.dataset.reportChart);
    if (spec.kind === "interval" && canvas.parentElement) {
      // one row per interval: the chart grows with them instead of squeezing them
      canvas.parentElement.style.height = `${Math.max(10, 2 * spec.labels.length + 4)}rem`;
    }
    new Chart(canvas, spec.kind === "interval" ? intervalConfig(spec) : seriesConfig(spec));
    canvas.dataset.rendered = "true";
  }
}

/** Charts about to be swapped out by htmx release their resize observers first. */
function destroyReportCharts(root) {
  const Chart = window.Chart;
  if (!Chart || !(root instanceof Element)) return;
  for (const canvas of root.querySelectorAll("canvas[data-report-chart]")) {
    Chart.getChart(canvas)?.destroy();
  }
}

renderReportCharts(document);
document.body.addEventListener("htmx:load", (event) => renderReportCharts(event.target));
document.body.addEventListener("htmx:beforeSwap", (event) => destroyReportCharts(event.detail.target));
// --- end of campaign report and channel economics charts ----------------------------
