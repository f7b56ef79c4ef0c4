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
//   {"kind": "interval", "labels", "estimate", "low", "high", "colours", "unit", "axisTitle",
//    "value"?, "valueLow"?, "valueHigh"? (true values when the drawn ones are clipped),
//    "clipped"? ([["estimate" | "low" | "high", ...] per row]),
//    "primary"? ([bool per row]: only those rows unless the figure's
//    <input data-chart-all=NAME> is checked)}
//   {"kind": "xy", "series": [{label, data: [{x, y}], colour?, dashed?}], "unit", "xUnit",
//    "xTitle", "yTitle"}
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

/** The rows of an interval chart the reader asked for: primary ones unless `all`. */
function chosenRows(spec, all) {
  if (all || !spec.primary || !spec.primary.some(Boolean)) return spec;
  const keep = spec.primary.map((flag, i) => (flag ? i : -1)).filter((i) => i >= 0);
  const chosen = { ...spec };
  for (const key of ["labels", "estimate", "low", "high", "value", "valueLow", "valueHigh",
                     "clipped", "colours", "primary"]) {
    if (Array.isArray(spec[key])) chosen[key] = keep.map((i) => spec[key][i]);
  }
  return chosen;
}

/** A value drawn at the axis's edge gets a triangle pointing out of the chart. */
function clippedMark(spec, i) {
  const clipped = (spec.clipped && spec.clipped[i]) || [];
  if (!clipped.includes("estimate")) return { style: "rectRot", rotation: 0, radius: 6 };
  const beyondHigh = spec.value ? spec.value[i] > spec.estimate[i] : true;
  return { style: "triangle", rotation: beyondHigh ? 90 : -90, radius: 8 };
}

/** Horizontal interval chart: a floating bar from low to high and a mark at the estimate. */
function intervalConfig(spec) {
  const colours = spec.colours || spec.labels.map((_, i) => reportPalette[i % reportPalette.length]);
  const marks = spec.labels.map((_, i) => clippedMark(spec, i));
  const shown = (key, fallback, i) => (spec[key] ? spec[key][i] : spec[fallback][i]);
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
          pointStyle: marks.map((mark) => mark.style),
          rotation: marks.map((mark) => mark.rotation),
          pointRadius: marks.map((mark) => mark.radius),
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
              const beyond = ((spec.clipped && spec.clipped[i]) || []).length ? " (beyond the axis)" : "";
              return `${withUnit(shown("value", "estimate", i), spec.unit)} (${withUnit(shown("valueLow", "low", i), spec.unit)} to ${withUnit(shown("valueHigh", "high", i), spec.unit)})${beyond}`;
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

/** A Qini-style curve: lines through (x, y) points on two linear axes. */
function xyConfig(spec) {
  const config = seriesConfig({ ...spec, kind: "lines", labels: [] });
  config.data.labels = undefined;
  config.options.interaction = { mode: "nearest", intersect: false };
  config.options.scales.x = {
    type: "linear",
    title: { display: Boolean(spec.xTitle), text: spec.xTitle },
    ticks: { callback: (value) => withUnit(value, spec.xUnit) },
  };
  config.options.scales.y.beginAtZero = false;
  config.options.plugins.tooltip = {
    callbacks: { label: (item) => `${item.dataset.label}: ${withUnit(item.raw.y, spec.unit)} at ${withUnit(item.raw.x, spec.xUnit)}` },
  };
  return config;
}

function allToggle(canvas) {
  const name = canvas.dataset.chartName;
  const scope = canvas.closest(".section-body") || document;
  return name ? scope.querySelector(`input[data-chart-all="${name}"]`) : null;
}

function drawReportChart(canvas) {
  const Chart = window.Chart;
  const full = JSON.parse(canvas.dataset.reportChart);
  const toggle = allToggle(canvas);
  const spec = full.kind === "interval" ? chosenRows(full, toggle ? toggle.checked : true) : full;
  if (spec.kind === "interval" && canvas.parentElement) {
    // one row per interval: the chart grows with them instead of squeezing them
    canvas.parentElement.style.height = `${Math.max(10, 2 * spec.labels.length + 4)}rem`;
  }
  Chart.getChart(canvas)?.destroy();
  const config = spec.kind === "interval" ? intervalConfig(spec)
    : spec.kind === "xy" ? xyConfig(spec) : seriesConfig(spec);
  new Chart(canvas, config);
  canvas.dataset.rows = spec.kind === "interval" ? String(spec.labels.length) : "";
  canvas.dataset.rendered = "true";
}

function renderReportCharts(root) {
  const Chart = window.Chart;
  if (!Chart) return;
  for (const canvas of root.querySelectorAll("canvas[data-report-chart]")) {
    if (canvas.dataset.rendered) continue;
    drawReportChart(canvas);
    const toggle = allToggle(canvas);
    if (toggle && !toggle.dataset.bound) {
      toggle.dataset.bound = "true";
      toggle.addEventListener("change", () => drawReportChart(canvas));
    }
  }
}

// The live report is swapped whole every 30 seconds: the sections a reader opened (and
// the "every metric" toggles they ticked) stay as they were.
let reportState = null;

function rememberReportState(target) {
  if (!(target instanceof Element) || !target.querySelector("details[data-section]")) return;
  reportState = {
    open: Object.fromEntries([...target.querySelectorAll("details[data-section]")]
      .map((details) => [details.dataset.section, details.open])),
    all: Object.fromEntries([...target.querySelectorAll("input[data-chart-all]")]
      .map((input) => [input.dataset.chartAll, input.checked])),
  };
}

function restoreReportState(root) {
  if (!reportState || !(root instanceof Element)) return;
  for (const details of root.querySelectorAll("details[data-section]")) {
    const open = reportState.open[details.dataset.section];
    if (open !== undefined) details.open = open;
  }
  for (const input of root.querySelectorAll("input[data-chart-all]")) {
    const checked = reportState.all[input.dataset.chartAll];
    if (checked !== undefined) input.checked = checked;
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
document.body.addEventListener("htmx:load", (event) => {
  restoreReportState(event.target);
  renderReportCharts(event.target);
});
document.body.addEventListener("htmx:beforeSwap", (event) => {
  rememberReportState(event.detail.target);
  destroyReportCharts(event.detail.target);
});
// --- end of campaign report and channel economics charts ----------------------------
