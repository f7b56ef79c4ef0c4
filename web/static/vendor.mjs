// Copies the front-end files the app serves from node_modules into vendor/<name>-<version>/.
// Versioned folder names let the server cache them forever; no CDN is ever used.
import { cpSync, mkdirSync, readFileSync, rmSync } from "node:fs";

const files = {
  "swagger-ui-dist": ["swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"],
};

rmSync("vendor", { recursive: true, force: true });
for (const [name, wanted] of Object.entries(files)) {
  const { version } = JSON.parse(readFileSync(`node_modules/${name}/package.json`, "utf8"));
  const target = `vendor/${name}-${version}`;
  mkdirSync(target, { recursive: true });
  for (const file of wanted) cpSync(`node_modules/${name}/${file}`, `${target}/${file}`);
  console.log(`${target}: ${wanted.join(", ")}`);
}
