// Bundles the app into dist/ (app.js, index.html, style.css). Deterministic: the same sources give
// the same files, so the committed dist/ can be checked against a fresh build.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";

rmSync("dist", { recursive: true, force: true });
mkdirSync("dist");
await build({
  entryPoints: ["src/main.ts"],
  bundle: true,
  minify: true,
  format: "iife",
  target: "es2022",
  outfile: "dist/app.js",
  legalComments: "none",
});
copyFileSync("index.html", "dist/index.html");
copyFileSync("style.css", "dist/style.css");
