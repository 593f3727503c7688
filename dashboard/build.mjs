// Builds the dashboard the function serves: dashboard/src -> flcore/dashboard/{index.html,app.js,app.css}.
// `npm run build:dashboard` (or `node dashboard/build.mjs [outdir]`); the output is committed, so
// deploying needs no npm. Same inputs, same esbuild: the same bytes (a test checks it).
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] || join(here, "..", "flcore", "dashboard");
mkdirSync(out, { recursive: true });
await build({
  entryPoints: { app: join(here, "src", "main.js") },
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  legalComments: "eof",
  outdir: out,
  logLevel: "warning",
});
copyFileSync(join(here, "src", "index.html"), join(out, "index.html"));
