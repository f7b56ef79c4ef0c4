// Copies the front-end files the app serves from node_modules into vendor/<name>-<version>/.
// Versioned folder names let the server cache them forever; no CDN is ever used.
// Each entry is a path inside the package; the copy keeps only the file name.
import { cpSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { basename } from "node:path";

const files = {
  "swagger-ui-dist": ["swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"],
  // htmx: partial page updates; the marketer UI configures it through a <meta> tag.
  "htmx.org": ["dist/htmx.min.js", "LICENSE"],
  // Chart.js: the UMD build is one self-contained file that defines window.Chart.
  "chart.js": ["dist/chart.umd.min.js", "LICENSE.md"],
};

rmSync("vendor", { recursive: true, force: true });
for (const [name, wanted] of Object.entries(files)) {
  const { version } = JSON.parse(readFileSync(`node_modules/${name}/package.json`, "utf8"));
  const target = `vendor/${name}-${version}`;
  mkdirSync(target, { recursive: true });
  for (const file of wanted) cpSync(`node_modules/${name}/${file}`, `${target}/${basename(file)}`);
  console.log(`${target}: ${wanted.map((file) => basename(file)).join(", ")}`);
}
